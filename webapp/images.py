"""Decode untrusted photo bytes in memory, safely, into a clean RGB image.

Every photo enters the app through ``safe_decode``: a format allow-list, a
pixel limit checked before the pixels are decoded, decompression-bomb warnings
turned into errors, EXIF orientation applied and then every byte of metadata
dropped by rebuilding the image from its pixels (GPS tags survive
``exif_transpose``). Nothing here touches the disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .i18n import N_, Message

try:  # HEIC/HEIF from phones; registered once, in memory.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_FORMATS = ("HEIF",)
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    HEIF_FORMATS = ()

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", *HEIF_FORMATS)  # phones' MPO files open as JPEG
FORMAT_NAMES = Message(N_("JPEG, PNG, WebP or HEIC"))
EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_IFD = 0x8769
MIN_ANALYSABLE_SIDE = 64
# Pillow's own opener, taken before anything can replace it: importing
# ultralytics (the YOLO detector) swaps ``Image.open`` process-wide for a
# wrapper that, on a file Pillow cannot identify, tries to install and load a
# HEIF plugin. Untrusted bytes must meet only Pillow and our allow-list.
_pillow_open = Image.open


class ImageRejected(ValueError):
    """A photo we will not accept; ``message`` is written for the person who sent it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class DecodedPhoto:
    image: Image.Image  # RGB, orientation applied, no metadata
    source_format: str
    digest: str  # sha256 of the pixels, for duplicate detection
    taken_on: dt.date | None  # EXIF DateTimeOriginal, if the photo has one


def safe_decode(data: bytes, max_pixels: int) -> DecodedPhoto:
    """Turn untrusted bytes into a clean RGB image or raise ImageRejected."""
    if not data:
        raise ImageRejected(Message(N_("The file is empty (0 bytes).")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _pillow_open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            raise ImageRejected(Message(N_("This file is not a photo we can read. Please send a %(formats)s image."), formats=FORMAT_NAMES), 415)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(Message(N_("This image has too many pixels to be processed safely.")), 413)
        except Exception:
            raise ImageRejected(Message(N_("This file could not be read as an image; it may be damaged.")))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                Message(N_("This image is %(width)dx%(height)d pixels, more than the %(limit)d megapixels allowed."),
                        width=width, height=height, limit=max_pixels // 1_000_000),
                413,
            )
        try:
            taken_on = _capture_date(image)
            image.load()
            # Animated files: the first frame is the photo.
            image.seek(0)
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(Message(N_("This image has too many pixels to be processed safely.")), 413)
        except Exception:
            raise ImageRejected(Message(N_("This image is damaged or truncated and could not be decoded.")))
    # Rebuild from raw pixels: the new image carries no EXIF, ICC, XMP or GPS.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    digest = hashlib.sha256(clean.tobytes()).hexdigest()
    return DecodedPhoto(clean, image.format or "unknown", digest, taken_on)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha onto white and convert any mode (CMYK, 16-bit, palette) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping at 255.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _capture_date(image: Image.Image) -> dt.date | None:
    try:
        exif = image.getexif()
        value = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(0x0132)
        if not value:
            return None
        return dt.datetime.strptime(str(value).strip()[:19], "%Y:%m:%d %H:%M:%S").date()
    except Exception:
        # A malformed date is not a reason to reject the photo.
        return None


def encode_jpeg(image: Image.Image, quality: int = 90, max_side: int | None = None) -> bytes:
    """Encode to JPEG bytes in memory, optionally shrunk so the longest side fits."""
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over a few KB: it only travels to the browser
    return buffer.getvalue()


def open_clean(data: bytes) -> Image.Image:
    """Re-open bytes this app encoded itself (already sanitised) as RGB."""
    image = _pillow_open(io.BytesIO(data), formats=("JPEG", "PNG"))
    return image.convert("RGB")
