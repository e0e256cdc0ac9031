"""Pictures the result page shows, drawn in memory: heatmap overlays and boxes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .images import encode_jpeg, encode_png
from .interfaces import Box


def heatmap_overlay_png(crop: Image.Image, heatmap: np.ndarray, weight: float = 0.45) -> bytes:
    """Blend a [0, 1] heatmap (jet colours: blue = little, red = most attention) onto the crop."""
    # Imported here: pytorch-grad-cam pulls in cv2 and matplotlib, which the
    # rest of the web app never needs.
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.asarray(crop.convert("RGB"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.fromarray(np.nan_to_num(heatmap).astype(np.float32)).resize(crop.size, Image.Resampling.BILINEAR))
    mask = np.clip(mask, 0.0, 1.0)
    # use_rgb=True: OpenCV's colormap is BGR; without it red attention shows as blue.
    overlay = show_cam_on_image(rgb, mask, use_rgb=True, image_weight=1.0 - weight)
    return encode_png(Image.fromarray(overlay))


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
