"""Synthetic skin photos with known lesion boxes, for tests and the benchmark.

One real photo cannot tell us whether a localizer works on other skin tones,
with hair, with a vignetting phone lens or with the lesion near an edge. These
generators make as many such photos as a test needs, deterministically for a
seed, each with the exact box of the lesion it drew.

The pictures are not meant to look clinically real; they are meant to carry the
things that break naive localizers: skin texture and freckles that are slightly
darker than skin, hair that is darker than the lesion, dark corners, a lesion
whose colour varies and whose border is irregular and soft, and JPEG artefacts.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from webapp.interfaces import Box

# Approximate sRGB colours of unlit skin from very light to dark brown, in the
# spirit of Fitzpatrick types I-VI. Names are used by tests to label cases.
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "I": (246, 222, 206),
    "II": (236, 196, 170),
    "III": (214, 166, 132),
    "IV": (180, 128, 92),
    "V": (132, 88, 60),
    "VI": (88, 58, 42),
}


def _rng(rng_or_seed: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about ``cell`` pixels (bilinear upsampled grid)."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _skin(rng, width, height, tone) -> np.ndarray:
    """Skin colour with blotchy low-frequency variation, fine grain and faint freckles."""
    base = np.array(SKIN_TONES[tone] if isinstance(tone, str) else tone, dtype=np.float32)
    scale = min(width, height)
    blotch = 0.04 * _smooth_noise(rng, height, width, max(8, scale // 6))
    grain = 0.025 * _smooth_noise(rng, height, width, 3)
    # Redness varies independently of brightness, as it does on real skin.
    redness = 0.02 * _smooth_noise(rng, height, width, max(8, scale // 4))
    img = base[None, None, :] * (1.0 + blotch + grain)[..., None]
    img[..., 0] *= 1.0 + redness
    img[..., 2] *= 1.0 - redness

    # Freckles: small, low-contrast, darker spots; a localizer must ignore them.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(0, 25))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.004, 0.012) * scale
        x0, x1 = int(max(0, cx - 3 * r)), int(min(width, cx + 3 * r + 1))
        y0, y1 = int(max(0, cy - 3 * r)), int(min(height, cy + 3 * r + 1))
        d2 = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2
        spot = np.exp(-d2 / (2 * r * r))
        img[y0:y1, x0:x1] *= (1.0 - rng.uniform(0.06, 0.15) * spot)[..., None]
    return img


def _lesion_mask(rng, width, height, diameter, centre) -> np.ndarray:
    """Soft (0..1) mask of an irregular blob: a wobbly polar outline, elongated and rotated."""
    cx, cy = centre
    radius = diameter / 2.0
    angles = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    wobble = np.zeros_like(angles)
    for k in range(2, 8):
        wobble += rng.uniform(0.0, 0.14 / k**0.5) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
    aspect = rng.uniform(0.7, 1.0)
    rot = rng.uniform(0, math.pi)
    r = radius * (1.0 + wobble)
    px = r * np.cos(angles)
    py = r * np.sin(angles) * aspect
    xs = cx + px * math.cos(rot) - py * math.sin(rot)
    ys = cy + px * math.sin(rot) + py * math.cos(rot)

    # Rasterise the polygon supersampled, then blur a little: real borders are soft.
    ss = 2
    canvas = Image.new("L", (width * ss, height * ss), 0)
    ImageDraw.Draw(canvas).polygon([(x * ss, y * ss) for x, y in zip(xs, ys)], fill=255)
    canvas = canvas.resize((width, height), Image.Resampling.BOX)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(0.5, diameter * 0.015)))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _paint_lesion(rng, img, mask) -> None:
    """Darken and brown the skin under the mask, with a variegated, partly darker core."""
    height, width = mask.shape
    skin_mean = img.reshape(-1, 3).mean(axis=0)
    # Lesions are brown to near-black; relative darkening keeps them visible on
    # dark skin too (where they are near-black rather than mid-brown).
    darkness = rng.uniform(0.35, 0.7)
    brown = np.array([0.55, 0.36, 0.24], dtype=np.float32) * skin_mean.max() * darkness / 0.55
    variegation = 1.0 + 0.18 * _smooth_noise(rng, height, width, max(4, width // 40))
    core = np.clip(_smooth_noise(rng, height, width, max(6, width // 25)), 0, None)
    colour = brown[None, None, :] * (variegation - 0.25 * core)[..., None]
    colour = np.clip(colour, 5, 255)
    a = mask[..., None]
    img[...] = img * (1 - a) + colour * a


def _hair(rng, img, count: int) -> None:
    """Dark, thin, gently curved hairs crossing the picture (they may cross the lesion)."""
    height, width = img.shape[:2]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(count):
        # A quadratic Bezier from one random border point to another.
        p0 = np.array([rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 0.3) * height])
        p2 = np.array([rng.uniform(-0.1, 1.1) * width, rng.uniform(0.7, 1.1) * height])
        if rng.random() < 0.5:  # some run left-right instead of top-bottom
            p0 = np.array([rng.uniform(-0.1, 0.3) * width, rng.uniform(-0.1, 1.1) * height])
            p2 = np.array([rng.uniform(0.7, 1.1) * width, rng.uniform(-0.1, 1.1) * height])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15, 2) * [width, height]
        t = np.linspace(0, 1, 60)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        thickness = max(1, int(round(rng.uniform(0.0015, 0.004) * min(width, height))))
        draw.line([tuple(p) for p in pts], fill=int(rng.uniform(180, 255)), width=thickness)
    alpha = np.asarray(layer, dtype=np.float32)[..., None] / 255.0
    hair_colour = np.array([35, 25, 20], dtype=np.float32)
    img[...] = img * (1 - alpha) + hair_colour * alpha


def _vignette(rng, img) -> None:
    """Darken towards the corners as a cheap phone lens or a ring light does."""
    height, width = img.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    cy = height / 2 + rng.uniform(-0.1, 0.1) * height
    r2 = ((xx - cx) / (width / 2)) ** 2 + ((yy - cy) / (height / 2)) ** 2
    strength = rng.uniform(0.3, 0.55)
    img *= np.clip(1.0 - strength * r2 / 2.0, 0.2, 1.0)[..., None]


def _finish(rng, img: np.ndarray) -> Image.Image:
    """Sensor noise, then a real in-memory JPEG round trip for its blocking and ringing."""
    img = img + 2.5 * rng.standard_normal(img.shape, dtype=np.float32)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(rng.integers(70, 92)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def make_lesion_photo(
    rng_or_seed: np.random.Generator | int | None = 0,
    width: int = 800,
    height: int = 600,
    skin_tone: str | tuple[int, int, int] = "II",
    lesion_size: float = 0.3,
    position: tuple[float, float] | None = None,
    hair: bool = False,
    vignette: bool = False,
) -> tuple[Image.Image, Box]:
    """A skin photo with one lesion, and the lesion's box in pixels (x1/y1 exclusive).

    ``lesion_size`` is the lesion's nominal diameter as a fraction of the shorter
    side; ``position`` is its centre as fractions of width and height (random
    when None). The lesion is kept inside the picture so that the box is the
    whole lesion: a centre too near an edge is moved inwards.
    """
    image, box, _ = make_lesion_photo_with_mask(rng_or_seed, width, height, skin_tone, lesion_size, position, hair, vignette)
    return image, box


def make_lesion_photo_with_mask(
    rng_or_seed: np.random.Generator | int | None = 0,
    width: int = 800,
    height: int = 600,
    skin_tone: str | tuple[int, int, int] = "II",
    lesion_size: float = 0.3,
    position: tuple[float, float] | None = None,
    hair: bool = False,
    vignette: bool = False,
) -> tuple[Image.Image, Box, Image.Image]:
    """``make_lesion_photo`` (the same photo for the same arguments) plus the lesion's mask.

    The mask is an "L" image, 255 where the lesion's soft mask is at least 0.5
    (the pixels the box is computed from), 0 elsewhere: a segmentation mask as
    the ISIC datasets hold it.
    """
    rng = _rng(rng_or_seed)
    diameter = lesion_size * min(width, height)
    # The wobbly outline can reach about 1.42x the nominal radius; keep that inside.
    reach = 0.75 * diameter + 3
    if position is None:
        position = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    cx = float(np.clip(position[0] * width, reach, width - reach))
    cy = float(np.clip(position[1] * height, reach, height - reach))

    img = _skin(rng, width, height, skin_tone)
    mask = _lesion_mask(rng, width, height, diameter, (cx, cy))
    _paint_lesion(rng, img, mask)
    if hair:
        _hair(rng, img, int(rng.integers(4, 14)))
    if vignette:
        _vignette(rng, img)

    ys, xs = np.nonzero(mask >= 0.5)
    box = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return _finish(rng, img), box, Image.fromarray(((mask >= 0.5) * 255).astype(np.uint8), "L")


def make_plain_skin(
    rng_or_seed: np.random.Generator | int | None = 0,
    width: int = 800,
    height: int = 600,
    skin_tone: str | tuple[int, int, int] = "II",
    hair: bool = False,
    vignette: bool = False,
) -> Image.Image:
    """A skin photo with texture and freckles (and optionally hair and vignetting) but no lesion."""
    rng = _rng(rng_or_seed)
    img = _skin(rng, width, height, skin_tone)
    if hair:
        _hair(rng, img, int(rng.integers(4, 14)))
    if vignette:
        _vignette(rng, img)
    return _finish(rng, img)


# Classes an adapter can learn and a random model cannot name: each kind has
# its own colour and shape, on varied skin, position and size.
LESION_KINDS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "round_brown": ("disc", (92, 56, 32)),
    "square_red": ("square", (190, 40, 48)),
    "triangle_blue": ("triangle", (52, 70, 150)),
}


def make_kind_photo(kind: str, rng_or_seed: np.random.Generator | int | None = 0, width: int = 200, height: int = 160) -> Image.Image:
    """A skin photo with one lesion of ``kind`` (see ``LESION_KINDS``): its shape and colour say the class."""
    rng = _rng(rng_or_seed)
    shape, colour = LESION_KINDS[kind]
    tone = list(SKIN_TONES)[int(rng.integers(0, 4))]
    img = _skin(rng, width, height, tone)
    side = min(width, height)
    radius = rng.uniform(0.18, 0.28) * side
    cx = rng.uniform(radius + 4, width - radius - 4)
    cy = rng.uniform(radius + 4, height - radius - 4)
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    if shape == "disc":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    elif shape == "square":
        draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        turn = rng.uniform(-0.3, 0.3)
        points = [(cx + radius * math.cos(turn + a), cy + radius * math.sin(turn + a))
                  for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(points, fill=255)
    mask = np.asarray(layer.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)[..., None] / 255.0
    jitter = np.array(colour, dtype=np.float32) * rng.uniform(0.85, 1.15)
    img[...] = img * (1 - mask) + jitter[None, None, :] * mask
    return _finish(rng, img)
