"""Square crops for the classifier, never stretched.

MedSigLIP sees 448x448 squares. Squashing a 16:9 photo into a square makes a
round mole oval and changes exactly the shape cues (symmetry, border) the
prompts describe, so we cut a square around the lesion and pad where that
square leaves the photo, as Google's own serving code pads before resizing.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from webapp.interfaces import Box

# A crop narrower than this (in original pixels) would be enlarged more than
# 4x to reach 448 px: blurry, and with too little surrounding skin for the
# classifier to compare the lesion against.
MIN_SIDE = 112


def square_region(image_size: tuple[int, int], box: Box | None, margin: float = 0.25) -> Box:
    """The square (in original pixels, possibly reaching outside the photo) to crop.

    With a box: centred on it, side ``max(w, h) * (1 + 2 * margin)`` and at least
    ``MIN_SIDE`` (but never more than the photo's longer side needs). Without:
    the whole photo, centred in a square of its longer side.
    """
    width, height = image_size
    if box is None:
        side = max(width, height)
        x0 = (width - side) // 2
        y0 = (height - side) // 2
        return Box(x0, y0, x0 + side, y0 + side)
    side = math.ceil(max(box.width, box.height) * (1 + 2 * margin))
    side = max(side, min(MIN_SIDE, max(width, height)))
    # floor(centre - side / 2) in integers: no float rounding differences.
    x0 = (box.x0 + box.x1 - side) // 2
    y0 = (box.y0 + box.y1 - side) // 2
    return Box(x0, y0, x0 + side, y0 + side)


def _pad_colour(image: Image.Image, visible: Box) -> tuple[int, ...]:
    """Mean colour of the visible region's outer frame of pixels.

    Why not black: a black band next to skin is a hard, dark edge, and a
    dark-pigment classifier (and its Grad-CAM) can read it as a dark lesion
    border. The frame's mean is the skin that the padding continues, so the
    padding is nearly invisible and carries no structure. Black is used only
    when there is no visible pixel at all.
    """
    if visible.width <= 0 or visible.height <= 0:
        return (0, 0, 0)
    x0, y0, x1, y1 = visible.as_list()
    # Read only the four one-pixel strips, not the whole (maybe huge) region.
    strips = [(x0, y0, x1, y0 + 1), (x0, y1 - 1, x1, y1), (x0, y0, x0 + 1, y1), (x1 - 1, y0, x1, y1)]
    frame = np.concatenate([np.asarray(image.crop(s), dtype=np.float64).reshape(-1, 3) for s in strips])
    return tuple(int(round(c)) for c in frame.mean(axis=0))


def square_crop(
    image: Image.Image, box: Box | None, margin: float = 0.25, size: int = 448
) -> tuple[Image.Image, Box]:
    """Cut a square around ``box`` (the whole photo when None), pad, resize to ``size``.

    Returns the ``size`` x ``size`` RGB crop and the square region in original
    pixels (which may extend past the photo where it was padded).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    region = square_region(image.size, box, margin)
    # The part of the region that lies inside the photo.
    visible = Box(max(region.x0, 0), max(region.y0, 0), min(region.x1, width), min(region.y1, height))

    crop = Image.new("RGB", (size, size), _pad_colour(image, visible))
    if visible.width > 0 and visible.height > 0:
        # Resize only the visible part straight to its place in the output, so
        # a 48-megapixel photo never needs a full-resolution square canvas.
        # Both axes use the same scale: the square stays a square (the edges
        # of the pasted part round to whole output pixels, at most 1 px).
        scale = size / region.width
        left = round((visible.x0 - region.x0) * scale)
        top = round((visible.y0 - region.y0) * scale)
        right = round((visible.x1 - region.x0) * scale)
        bottom = round((visible.y1 - region.y0) * scale)
        if right > left and bottom > top:
            # Pillow's bilinear filter widens its support when shrinking, so
            # large photos are averaged rather than aliased.
            part = image.resize((right - left, bottom - top), Image.Resampling.BILINEAR, box=visible.as_list())
            crop.paste(part, (left, top))
    return crop, region


def pad_to_square(image: Image.Image) -> Image.Image:
    """The whole photo centred on a square of its longer side, padded, not resized."""
    region = square_region(image.size, None)
    return square_crop(image, None, size=region.width)[0]
