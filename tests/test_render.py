"""The pictures drawn in memory for the result page."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from webapp.interfaces import Box
from webapp.render import boxed_photo_jpeg, heatmap_overlay_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_overlay_is_an_rgb_png_of_the_crop_size_whatever_the_heatmap_size():
    crop = Image.new("RGB", (448, 448), (120, 100, 90))
    for heatmap in (np.random.default_rng(0).random((448, 448), dtype=np.float32), np.zeros((32, 32), np.float32)):
        data = heatmap_overlay_png(crop, heatmap)
        assert data.startswith(PNG_SIGNATURE)
        decoded = Image.open(io.BytesIO(data))
        assert decoded.mode == "RGB" and decoded.size == (448, 448)


def test_overlay_colours_are_rgb_not_bgr():
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    red, green, blue = Image.open(io.BytesIO(heatmap_overlay_png(grey, np.ones((64, 64), np.float32)))).getpixel((10, 10))
    assert red > blue + 50  # jet's top is red; BGR output would have made it blue
    red, green, blue = Image.open(io.BytesIO(heatmap_overlay_png(grey, np.zeros((64, 64), np.float32)))).getpixel((10, 10))
    assert blue > red + 30  # and its bottom is blue


def test_overlay_survives_nan_and_out_of_range_values():
    heatmap = np.full((16, 16), np.nan, np.float32)
    heatmap[0, 0] = 7.0
    assert Image.open(io.BytesIO(heatmap_overlay_png(Image.new("RGB", (16, 16)), heatmap))).size == (16, 16)


def test_boxed_photo_draws_the_box_and_shrinks_large_photos():
    photo = Image.new("RGB", (2000, 1000), (200, 200, 200))
    data = boxed_photo_jpeg(photo, Box(100, 100, 500, 400), Box(0, 0, 700, 700), max_side=1000)
    shown = Image.open(io.BytesIO(data))
    assert shown.size == (1000, 500)
    r, g, b = shown.getpixel((150, 50))  # on the box's top edge, scaled by 0.5
    assert b > 150 and r < 100
    assert shown.getpixel((400, 300))[0] > 180  # inside the box: untouched grey
