"""Synthetic degradations of a photo, for the quality gate's tests and its figures.

Each one imitates a way a real phone photo goes wrong: out of focus (Gaussian
blur), under- or over-exposed (gamma and gain), grainy (Gaussian sensor
noise), too small (downscaling) or with the finding cut off (cropping). They
run in memory on PIL images and are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from webapp.interfaces import Box


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur of standard deviation ``sigma`` pixels (0 returns a copy)."""
    return image.copy() if sigma <= 0 else image.filter(ImageFilter.GaussianBlur(radius=sigma))


def gamma(image: Image.Image, value: float, gain: float = 1.0) -> Image.Image:
    """out = gain * 255 * (in / 255) ** value: value > 1 darkens, < 1 brightens."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    out = np.clip(gain * np.power(rgb, value), 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(out).astype(np.uint8), "RGB")


def noise(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """Additive Gaussian noise of ``sigma`` grey levels on every channel."""
    rng = np.random.default_rng(seed)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = rgb + sigma * rng.standard_normal(rgb.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def downscale(image: Image.Image, factor: float) -> tuple[Image.Image, float]:
    """The photo shrunk by ``factor`` (0.1 = a tenth of the width), and the exact scale used."""
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), size[0] / width


def scale_box(box: Box, scale: float) -> Box:
    return Box(int(box.x0 * scale), int(box.y0 * scale), int(np.ceil(box.x1 * scale)), int(np.ceil(box.y1 * scale)))


def cut_through(image: Image.Image, box: Box, keep: float) -> tuple[Image.Image, Box]:
    """Crop the photo's right side so only ``keep`` (0-1) of the finding's width stays in it.

    Returns the cropped photo and the finding's box in it (clipped to the new edge).
    """
    right = box.x0 + max(1, round(box.width * keep))
    return image.crop((0, 0, right, image.height)), Box(box.x0, box.y0, min(box.x1, right), box.y1)


def greyscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")
