import numpy as np
import pytest
from PIL import Image, ImageDraw

from webapp.cropping import MIN_SIDE, pad_to_square, square_crop, square_region
from webapp.interfaces import Box

SKIN = (214, 166, 132)


def noise_photo(width=800, height=600, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def disc_extent(crop, threshold=100):
    """Width and height of the dark disc in a crop."""
    dark = np.asarray(crop.convert("L")) < threshold
    ys, xs = np.nonzero(dark)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_square_inside_the_photo_is_an_exact_crop_and_resize():
    photo = noise_photo()
    box = Box(300, 200, 400, 280)  # 100 x 80: the square follows the longer side
    crop, region = square_crop(photo, box)
    # side = 100 * (1 + 2 * 0.25) = 150, centred on (350, 240)
    assert region == Box(275, 165, 425, 315)
    expected = photo.crop(region.as_list()).resize((448, 448), Image.Resampling.BILINEAR)
    assert crop.size == (448, 448)
    # Identical except the outermost output pixels: square_crop resizes with the
    # photo's real neighbouring pixels where a crop-then-resize clamps its edge.
    assert np.array_equal(np.asarray(crop)[1:-1, 1:-1], np.asarray(expected)[1:-1, 1:-1])


@pytest.mark.parametrize("size", [(900, 500), (500, 900), (1800, 1010)])
def test_whole_photo_keeps_a_circle_round(size):
    width, height = size
    photo = Image.new("RGB", size, SKIN)
    r = min(width, height) // 3
    cx, cy = width // 2, height // 2
    ImageDraw.Draw(photo).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(40, 25, 20))
    crop, region = square_crop(photo, None)
    assert crop.size == (448, 448)
    w, h = disc_extent(crop)
    assert abs(w - h) <= 2, (w, h)
    # The disc's diameter is 2r of the longer side, scaled to 448.
    assert abs(w - 2 * r * 448 / max(size)) <= 3


def test_circle_near_an_edge_stays_round_in_a_box_crop():
    photo = Image.new("RGB", (900, 500), SKIN)
    ImageDraw.Draw(photo).ellipse((0, 350, 120, 470), fill=(40, 25, 20))
    crop, region = square_crop(photo, Box(0, 350, 121, 471))
    assert region.x0 < 0  # the square runs past the left edge
    w, h = disc_extent(crop)
    assert abs(w - h) <= 2, (w, h)


def test_box_at_the_corner_is_padded_with_the_border_colour_not_stretched():
    photo = Image.new("RGB", (800, 600), SKIN)
    ImageDraw.Draw(photo).rectangle((0, 0, 99, 99), fill=(40, 25, 20))
    crop, region = square_crop(photo, Box(0, 0, 100, 100))
    assert region == Box(-25, -25, 125, 125)
    pixels = np.asarray(crop).astype(int)
    # 25 of 150 original pixels are padding: the first ~74 output rows/columns.
    pad = pixels[:70, :70].reshape(-1, 3)
    assert np.all(np.abs(pad - pad[0]) <= 1)  # one flat colour
    assert pad[0].sum() > 3 * 60  # the frame's mean (skin and lesion), not black
    # The dark square starts right after the padding, on both axes alike.
    dark = pixels[..., 0] < 100
    rows, cols = np.nonzero(dark)
    assert abs(rows.min() - 74.7) <= 2 and abs(cols.min() - 74.7) <= 2
    assert abs(rows.max() - 373.3) <= 2 and abs(cols.max() - 373.3) <= 2


def test_no_box_pads_the_whole_photo_to_a_centred_square():
    photo = Image.new("RGB", (800, 400), (200, 50, 50))
    crop, region = square_crop(photo, None)
    assert region == Box(0, -200, 800, 600)
    pixels = np.asarray(crop)
    assert crop.size == (448, 448)
    # Top and bottom quarters are padding in the border colour (here the photo's own).
    assert np.all(pixels[:100] == (200, 50, 50)) and np.all(pixels[-100:] == (200, 50, 50))
    square = pad_to_square(photo)
    assert square.size == (800, 800)


def test_padding_colour_is_the_visible_border_mean():
    photo = Image.new("RGB", (400, 200), (0, 0, 0))
    ImageDraw.Draw(photo).rectangle((0, 0, 399, 99), fill=(200, 100, 0))  # top half orange
    square = np.asarray(pad_to_square(photo)).astype(int)
    # The outer frame of the photo is about half orange, half black.
    pixels = np.asarray(photo)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert np.all(np.abs(square[0, 0] - border.mean(axis=0)) <= 1)


@pytest.mark.parametrize(
    "box",
    [Box(10, 10, 20, 20), Box(0, 0, 800, 600), Box(700, 500, 800, 600), Box(-50, -50, 10, 10), Box(300, 0, 310, 600)],
)
def test_output_is_always_the_requested_rgb_square(box):
    photo = noise_photo().convert("RGBA")
    crop, region = square_crop(photo, box, size=448)
    assert crop.size == (448, 448) and crop.mode == "RGB"
    assert region.width == region.height
    # The square contains the box and is centred on it (to within rounding).
    assert region.x0 <= box.x0 and region.y0 <= box.y0 and region.x1 >= box.x1 and region.y1 >= box.y1
    assert abs((region.x0 + region.x1) - (box.x0 + box.x1)) <= 1
    assert abs((region.y0 + region.y1) - (box.y0 + box.y1)) <= 1


def test_tiny_box_gets_the_minimum_side():
    region = square_region((800, 600), Box(400, 300, 405, 305))
    assert region.width == MIN_SIDE
    # ... but never more than a small photo itself needs.
    assert square_region((60, 40), Box(10, 10, 12, 12)).width == 60


def test_other_sizes_and_margins():
    crop, region = square_crop(noise_photo(), Box(100, 100, 300, 200), margin=0.0, size=224)
    assert crop.size == (224, 224)
    assert region == Box(100, 50, 300, 250)
