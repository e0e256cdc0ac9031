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
# A capture date before digital photos were common, or after tomorrow (time
# zones), is a wrong camera clock or a forged tag: the file date is used instead.
EARLIEST_PLAUSIBLE_DATE = dt.date(1990, 1, 1)
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
    # Width, height of the photo as sent, after its EXIF rotation (``image`` may be smaller: WORKING_MAX_SIDE).
    original_size: tuple[int, int] | None = None


# The longest side any stage works on: photos are stored at most this size
# (webapp/views/photos.py), and every analysis, extra heatmap and API call
# works from that. It is far more than the classifier's 448 px crop needs, and
# enough for the quality gate's resolution check (the region the classifier
# sees must be at least half its input side, 224 px) on a lesion that spans
# 7 % of the photo's longer side. Larger photos are decoded at reduced scale
# (JPEG) or shrunk right after decoding (other formats).
WORKING_MAX_SIDE = 3072
# Pillow keeps 1 byte per pixel for these modes, 2 for 16-bit grey, 4 for the rest.
_ONE_BYTE_MODES = {"1", "L", "P"}
# Modes Pillow resizes only with nearest-neighbour: converted before shrinking.
_CONVERT_BEFORE_SHRINKING = {"1", "P", "PA"}
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
TOO_MANY_PIXELS = Message(N_("This image has too many pixels to be processed safely."))


@dataclass
class OpenedPhoto:
    """A photo whose header was read and checked; no pixel is decoded yet (Pillow opens lazily)."""

    image: Image.Image
    source_format: str
    file_size: tuple[int, int]  # width, height as in the file
    decode_size: tuple[int, int]  # what the decoder will produce (JPEG draft mode: 1/2, 1/4 or 1/8 scale)
    working_size: tuple[int, int]  # after shrinking to WORKING_MAX_SIDE
    cost_bytes: int  # estimated peak memory of decoding it, for the caps (webapp/decoding.py)


def _bytes_per_pixel(mode: str) -> int:
    if mode in _ONE_BYTE_MODES:
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_cost(mode: str, decode_size: tuple[int, int], working_size: tuple[int, int], source_format: str) -> int:
    """Peak bytes held while decoding (measured within 10 % on 48-megapixel PNGs and JPEGs).

    The decoder's full buffer (plus a converted copy for palette images, and
    libheif's own buffer for HEIC); while shrinking, the resampler's
    intermediate (target width x source height) and the result; afterwards at
    most four working-size copies (the image, turned upright or converted,
    its raw bytes, and the clean rebuild).
    """
    decoded = decode_size[0] * decode_size[1]
    full = decoded * _bytes_per_pixel(mode)
    if mode in _CONVERT_BEFORE_SHRINKING:
        full += decoded * 4
    if source_format in HEIF_FORMATS:
        full *= 2
    working = working_size[0] * working_size[1]
    if max(decode_size) <= max(working_size):  # nothing to shrink: the decoded image is the working one
        return full + 11 * working
    shrinking = full + 4 * working_size[0] * decode_size[1] + 4 * working
    return max(shrinking, 15 * working)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled so its longer side is at most ``max_side`` (the size ``thumbnail`` gives)."""
    width, height = size
    if max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def open_photo(data: bytes, max_pixels: int, max_side: int = WORKING_MAX_SIDE) -> OpenedPhoto:
    """Read and check the header of untrusted bytes; raise ImageRejected, in words, if unusable.

    For a JPEG larger than ``max_side`` the decoder is set to the smallest
    of 1/2, 1/4 or 1/8 scale that still gives at least ``max_side`` pixels
    (Pillow's draft mode), so a 48-megapixel phone photo never exists in
    memory at full size.
    """
    if not data:
        raise ImageRejected(Message(N_("The file is empty (0 bytes).")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _pillow_open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            raise ImageRejected(Message(N_("This file is not a photo we can read. Please send a %(formats)s image."), formats=FORMAT_NAMES), 415)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(TOO_MANY_PIXELS, 413)
        except Exception:
            raise ImageRejected(Message(N_("This file could not be read as an image; it may be damaged.")))
    width, height = file_size = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            Message(N_("This image is %(width)dx%(height)d pixels, more than the %(limit)d megapixels allowed."),
                    width=width, height=height, limit=max_pixels // 1_000_000),
            413,
        )
    source_format = image.format or "unknown"
    target = _fit(file_size, max_side)
    if target != file_size:
        try:
            image.draft(None, target)  # JPEG only; other formats ignore it
        except Exception:
            pass  # a decoder that cannot draft decodes at full size (and is costed so)
    return OpenedPhoto(image, source_format, file_size, image.size, target,
                       decode_cost(image.mode, image.size, target, source_format))


def decode_photo(opened: OpenedPhoto) -> DecodedPhoto:
    """Decode an opened photo into a clean RGB image of at most ``working_size``, or raise ImageRejected."""
    image = opened.image
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            taken_on = _capture_date(image)
            image.load()
            orientation = image.getexif().get(_ORIENTATION, 1)
            # Animated files: the first frame is the photo.
            image.seek(0)
            if image.mode in _CONVERT_BEFORE_SHRINKING:
                image = _to_rgb(image)
            if max(image.size) > max(opened.working_size):
                # Shrink before any other copy is made: the full-size buffer goes at once.
                image.thumbnail(opened.working_size, Image.Resampling.LANCZOS)
            method = _TRANSPOSE.get(orientation)
            upright = image.transpose(method) if method is not None else image
            del image
            rgb = _to_rgb(upright)
            del upright
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(TOO_MANY_PIXELS, 413)
        except Exception:
            raise ImageRejected(Message(N_("This image is damaged or truncated and could not be decoded.")))
        finally:
            opened.image = None  # the full-size decoder buffer is freed with its last reference
    # Rebuild from raw pixels: the new image carries no EXIF, ICC, XMP or GPS.
    size, pixels = rgb.size, rgb.tobytes()
    del rgb
    clean = Image.frombytes("RGB", size, pixels)
    digest = hashlib.sha256(pixels).hexdigest()
    width, height = opened.file_size
    original = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return DecodedPhoto(clean, opened.source_format, digest, taken_on, original)


def safe_decode(data: bytes, max_pixels: int, max_side: int = WORKING_MAX_SIDE) -> DecodedPhoto:
    """Turn untrusted bytes into a clean RGB image (longest side at most ``max_side``) or raise ImageRejected."""
    return decode_photo(open_photo(data, max_pixels, max_side))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten alpha onto white and convert any mode (CMYK, 16-bit, palette) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping at 255.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def plausible_date(day: dt.date | None) -> dt.date | None:
    """``day`` if a photo could have been taken then (1990 to tomorrow), else None."""
    if day is None or not EARLIEST_PLAUSIBLE_DATE <= day <= dt.date.today() + dt.timedelta(days=1):
        return None
    return day


def _capture_date(image: Image.Image) -> dt.date | None:
    try:
        exif = image.getexif()
        value = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(0x0132)
        if not value:
            return None
        return plausible_date(dt.datetime.strptime(str(value).strip()[:19], "%Y:%m:%d %H:%M:%S").date())
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
