import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from plugins.dermatology.localizer import ClassicalLesionLocalizer
from tests.synthetic import SKIN_TONES, make_lesion_photo, make_plain_skin
from webapp.interfaces import Box, Detector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NCI_PHOTO = DATA / "nci-melanoma-1800x1010.jpg"
NCI_BOX = Box(410, 340, 1090, 800)  # hand-checked, about +-20 px (see the data README)

# The synthetic grid: every skin tone, small to large lesions, centred and
# pushed towards the corners, with and without hair and vignetting. Each tone
# gets 8 of the 12 size/position pairs (rotating, so every pair is used 4
# times) and all four hair/vignetting combinations: 48 photos.
SIZES = (0.12, 0.25, 0.45)
POSITIONS = ((0.5, 0.5), (0.08, 0.1), (0.92, 0.9), (0.9, 0.12))
PAIRS = list(itertools.product(SIZES, POSITIONS))
CASES = [
    # (seed, tone, lesion size, position, hair, vignette)
    (8 * t + k, tone, *PAIRS[(8 * t + k) % len(PAIRS)], k % 2 == 0, k % 3 != 1)
    for t, tone in enumerate(SKIN_TONES)
    for k in range(8)
]


@pytest.fixture(scope="module")
def localizer():
    return ClassicalLesionLocalizer()


@pytest.fixture(scope="module")
def grid_ious(localizer):
    """IoU of every synthetic case (0 when nothing was found), keyed by the case."""
    ious = {}
    for case in CASES:
        seed, tone, size, position, hair, vignette = case
        photo, truth = make_lesion_photo(
            seed, width=640, height=480, skin_tone=tone, lesion_size=size, position=position,
            hair=hair, vignette=vignette,
        )
        found = localizer.locate(photo)
        ious[case] = found.box.iou(truth) if found else 0.0
    return ious


def test_is_a_detector(localizer):
    assert isinstance(localizer, Detector)
    assert localizer.name == "classical"


def test_real_photo_with_hair_near_the_top():
    if not NCI_PHOTO.is_file():
        pytest.skip(f"the shared test photo is not in this checkout: {NCI_PHOTO}")
    with Image.open(NCI_PHOTO) as photo:
        found = ClassicalLesionLocalizer().locate(photo.convert("RGB"))
    assert found is not None
    assert found.method == "classical colour threshold"
    assert 0.0 <= found.confidence <= 1.0
    assert found.box.iou(NCI_BOX) >= 0.7, found.box


def test_synthetic_grid_mean_iou(grid_ious):
    values = np.array(list(grid_ious.values()))
    assert len(values) >= 40
    worst = min(grid_ious, key=grid_ious.get)
    print(f"synthetic grid: n={len(values)} mean IoU={values.mean():.3f} min={values.min():.3f} (worst case {worst})")
    assert values.mean() >= 0.7
    # Not only on average: every lesion is found and roughly boxed.
    assert values.min() >= 0.5, f"worst case {worst}: IoU {values.min():.3f}"


@pytest.mark.parametrize("tone", list(SKIN_TONES))
def test_every_skin_tone_is_served(grid_ious, tone):
    values = [iou for case, iou in grid_ious.items() if case[1] == tone]
    assert len(values) >= 6
    assert np.mean(values) >= 0.7, (tone, values)


def test_hair_and_vignetting_do_not_break_it(grid_ious):
    for hair, vignette in itertools.product((False, True), repeat=2):
        values = [iou for case, iou in grid_ious.items() if case[4:] == (hair, vignette)]
        assert values and np.mean(values) >= 0.7, (hair, vignette, values)


@pytest.mark.parametrize("seed, tone", list(enumerate(SKIN_TONES)))
def test_plain_skin_has_no_lesion(localizer, seed, tone):
    for hair, vignette in ((False, False), (True, True)):
        photo = make_plain_skin(seed, width=640, height=480, skin_tone=tone, hair=hair, vignette=vignette)
        assert localizer.locate(photo) is None, (tone, hair, vignette)


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (214, 166, 132), (90, 58, 42)])
def test_uniform_image_has_no_lesion(localizer, colour):
    assert localizer.locate(Image.new("RGB", (640, 480), colour)) is None


@pytest.mark.parametrize("background", [(128, 128, 128), (90, 140, 220), (60, 160, 70)])
def test_dark_blob_on_a_non_skin_picture_is_not_a_lesion(localizer, background):
    rng = np.random.default_rng(1)
    pixels = np.clip(np.array(background) + rng.normal(0, 6, (480, 640, 3)), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, "RGB")
    ImageDraw.Draw(picture).ellipse((250, 180, 380, 290), fill=(30, 30, 40))
    assert localizer.locate(picture) is None


def test_box_is_in_original_pixels_for_any_size_and_mode(localizer):
    # A portrait photo, larger than the working size, given as RGBA.
    photo, truth = make_lesion_photo(7, width=900, height=1300, skin_tone="IV", lesion_size=0.3, position=(0.3, 0.7))
    found = localizer.locate(photo.convert("RGBA"))
    assert found is not None and found.box.iou(truth) >= 0.7
    box = found.box
    assert 0 <= box.x0 < box.x1 <= 900 and 0 <= box.y0 < box.y1 <= 1300
    # A photo smaller than the working size is not upscaled.
    small, truth = make_lesion_photo(8, width=300, height=200, skin_tone="II", lesion_size=0.35)
    found = localizer.locate(small)
    assert found is not None and found.box.iou(truth) >= 0.7


def test_lesion_cut_by_the_photo_edge_is_still_found(localizer):
    # A quarter of the lesion lies outside the frame: box the part that is visible.
    photo, whole = make_lesion_photo(9, width=800, height=600, skin_tone="III", lesion_size=0.3, position=(0.5, 0.5))
    cut = whole.x0 + whole.width // 4
    photo = photo.crop((cut, 0, 800, 600))
    found = localizer.locate(photo)
    assert found is not None and found.box.iou(Box(0, whole.y0, whole.x1 - cut, whole.y1)) >= 0.7


def test_tiny_image_is_not_an_error(localizer):
    assert localizer.locate(Image.new("RGB", (8, 8), (200, 150, 120))) is None
