"""Pictures the result page shows, drawn in memory: heatmap overlays and boxes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .images import encode_jpeg, encode_png
from .interfaces import Box


def heatmap_overlay_png(crop: Image.Image, heatmap: np.ndarray, image_weight: float = 0.55) -> bytes:
    """Blend a [0, 1] heatmap onto the crop (jet: dark blue = little, dark red = most), as PNG bytes."""
    import cv2

    rgb = np.asarray(crop.convert("RGB"), dtype=np.float32) / 255.0
    height, width = rgb.shape[:2]
    mask = np.asarray(heatmap, dtype=np.float32)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = np.clip(np.nan_to_num(mask), 0.0, 1.0)
    # OpenCV's colour maps are BGR: converted, or red attention would show as blue.
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1 - image_weight) * (np.float32(colours) / 255) + image_weight * rgb
    blended = blended / blended.max()
    return encode_png(Image.fromarray(np.uint8(255 * blended), mode="RGB"))


def boxed_photo_jpeg(image: Image.Image, box: Box | None, region: Box | None, max_side: int = 1024) -> bytes:
    """The photo with the detector's box (solid) and the square crop region (dashed look) drawn on it."""
    scale = min(1.0, max_side / max(image.size))
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))) if scale < 1 else image.copy()
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 200))
    if region is not None:
        draw.rectangle([c * scale for c in region.as_list()], outline=(255, 255, 255), width=max(1, width // 2))
    if box is not None:
        draw.rectangle([c * scale for c in box.as_list()], outline=(0, 200, 255), width=width)
    return encode_jpeg(shown, quality=85)
