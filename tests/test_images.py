"""safe_decode: what is accepted, what is refused and with which words."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pytest
from PIL import Image

from webapp.images import ImageRejected, encode_jpeg, safe_decode

LIMIT = 50_000_000


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def gradient(width=120, height=80) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (height, 1))] * 3, axis=-1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_common_formats_decode_to_rgb(fmt):
    decoded = safe_decode(encode(gradient(), fmt), LIMIT)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (120, 80)
    assert decoded.source_format == fmt


def test_heic_from_phones_decodes():
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(gradient()).save(buffer, quality=90)
    decoded = safe_decode(buffer.getvalue(), LIMIT)
    assert decoded.image.size == (120, 80)
    assert decoded.source_format == "HEIF"


@pytest.mark.parametrize(
    "data, words, status",
    [
        (b"", "empty", 400),
        (b"this is not a photo at all", "not a photo", 415),
        (b"GIF89a" + b"\x00" * 40, "not a photo", 415),  # GIF is not on the allow-list
        (b"%PDF-1.4\n" + b"x" * 100, "not a photo", 415),
    ],
)
def test_non_images_are_refused_in_words(data, words, status):
    with pytest.raises(ImageRejected) as caught:
        safe_decode(data, LIMIT)
    assert words in caught.value.message
    assert caught.value.status == status


def test_truncated_jpeg_is_refused():
    data = encode(gradient(400, 300), "JPEG")
    with pytest.raises(ImageRejected) as caught:
        safe_decode(data[: len(data) // 2], LIMIT)
    assert "damaged" in caught.value.message


def test_pixel_limit_is_checked_before_decoding():
    # A PNG that declares 30000x30000: refused from its header alone.
    data = encode(Image.new("L", (30000, 30000)), "PNG", optimize=False)
    with pytest.raises(ImageRejected) as caught:
        safe_decode(data, LIMIT)
    assert caught.value.status == 413
    assert "pixels" in caught.value.message


def test_exif_rotation_is_applied_and_metadata_dropped():
    image = gradient(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    gps = exif.get_ifd(0x8825)
    gps[2] = (52.0, 13.0, 0.0)  # latitude
    exif.get_ifd(0x8769)[0x9003] = "2024:03:05 10:11:12"
    decoded = safe_decode(encode(image, "JPEG", exif=exif.tobytes()), LIMIT)
    assert decoded.image.size == (80, 120)  # orientation applied
    assert decoded.taken_on == dt.date(2024, 3, 5)
    assert not decoded.image.info
    assert not decoded.image.getexif()
    # And what we store is clean too: re-encoded bytes carry no GPS/EXIF.
    stored = Image.open(io.BytesIO(encode_jpeg(decoded.image)))
    assert not stored.getexif()


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("CMYK", (90, 70), (0, 50, 100, 0)), "JPEG"),
        (Image.new("I;16", (90, 70), 40000), "PNG"),
        (Image.new("P", (90, 70), 3), "PNG"),
        (Image.new("RGBA", (90, 70), (255, 0, 0, 0)), "PNG"),
        (Image.new("LA", (90, 70), (30, 128)), "PNG"),
        (Image.new("L", (90, 70), 30), "JPEG"),
    ],
    ids=["cmyk", "16-bit", "palette", "alpha", "grey-alpha", "grey"],
)
def test_unusual_modes_become_rgb(image, fmt):
    decoded = safe_decode(encode(image, fmt), LIMIT)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (90, 70)


def test_sixteen_bit_is_scaled_not_clipped():
    decoded = safe_decode(encode(Image.new("I;16", (10, 10), 32768), "PNG"), LIMIT)
    assert decoded.image.getpixel((0, 0)) == (128, 128, 128)


def test_transparent_pixels_become_white():
    decoded = safe_decode(encode(Image.new("RGBA", (10, 10), (255, 0, 0, 0)), "PNG"), LIMIT)
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)


def test_animated_webp_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = safe_decode(buffer.getvalue(), LIMIT)
    assert decoded.image.getpixel((20, 15))[0] > 200


def test_same_pixels_same_digest_whatever_the_container():
    image = gradient()
    png = safe_decode(encode(image, "PNG"), LIMIT)
    webp = safe_decode(encode(image, "WEBP", lossless=True), LIMIT)
    assert png.digest == webp.digest
    assert png.digest != safe_decode(encode(gradient(121, 80), "PNG"), LIMIT).digest
