"""The quality gate: is this picture good enough for any answer at all?

Pure checks on a PIL image (no model, a few milliseconds), run before
classification. Each check measures one thing a clinician would reject a photo
for, compares it with a limit that is bank data (``[quality]`` in
``prompts/<bank>.toml``, per modality) and, when it fails, says how to retake
the picture. The limits were chosen from synthetic degradations of real and
synthetic photos built by ``tests/test_quality.py``; ``bench/quality_limits.py``
prints the measured figures that ``docs/clinical-safety.md`` quotes.

The checks, and why each exists:

- sharpness: Crete-Roffet's no-reference blur measure of the located region,
  resized to the model's input side first, so that a large photo does not look
  sharper than a small one of the same scene (the measure is per pixel;
  resizing to a common scale normalises it for size). It is a ratio, so it is
  the same for dark and light skin, unlike a raw variance of the Laplacian.
  Motion or focus blur removes exactly the edges and texture a model reads.
- noise: Immerkaer's fast noise-sigma estimate (a Laplacian-difference mask
  that cancels image structure). Noise inflates the Laplacian, so without this
  check a grainy night photo would pass as "sharp".
- exposure: mean luminance (too dark / too bright) and the fraction of clipped
  pixels (black or blown-out white): what is clipped holds no information.
- resolution: pixels across the region the classifier sees; below the model's
  input size the crop is upscaled, which invents no detail.
- framing: a finding touching the photo's edge is cut off, and its border is
  what matters most for a pigmented lesion.
- colour: a dermatology photo is in colour, a chest radiograph is greyscale
  (the colourfulness metric of Hasler and Suesstrunk, 2003). It is also the
  deterministic backstop of the scope gate.

This module imports nothing else of the app but ``webapp.i18n`` (which imports
none), so the bank parser can use its dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
from flask_babel import gettext
from PIL import Image

from .i18n import N_, Message, Translated

# Grey levels at or beyond which a pixel counts as clipped (8-bit luminance).
CLIP_DARK = 5
CLIP_BRIGHT = 250

DEFAULT_HINTS = {
    "sharpness": N_("Too blurred: hold the camera still, tap the screen to focus on the spot and take the photo again."),
    "noise": N_("Too grainy: this usually means too little light. Move to daylight or switch on a lamp."),
    "exposure_dark": N_("Too dark: move to daylight or switch on a lamp, and avoid your own shadow."),
    "exposure_bright": N_("Too bright: avoid direct sunlight or the flash glare, or step back from the lamp."),
    "clipping": N_("Part of the picture is pure black or blown-out white: even out the light and retake it."),
    "resolution": N_("Too small or too far away: move closer (keep it in focus) or send the original, full-size photo."),
    "framing": N_("The spot is cut off by the edge of the photo: step back or centre it, with some skin around it."),
    "colour": N_("This is not a colour photo: take a colour photograph (no filter, no black-and-white mode)."),
}
# The checks' names in a sentence or a table.
CHECK_NAMES = {
    "sharpness": N_("sharpness"), "noise": N_("noise"), "exposure_dark": N_("exposure, dark limit"),
    "exposure_bright": N_("exposure, bright limit"), "clipping": N_("clipping"), "resolution": N_("resolution"),
    "framing": N_("framing"), "colour": N_("colour"),
}


def check_name(name: str) -> str:
    """One check's name in the request's language."""
    return gettext(CHECK_NAMES[name]) if name in CHECK_NAMES else name.replace("_", " ")


def check_names(checks) -> str:
    return ", ".join(check_name(check.name) for check in checks)


@dataclass(frozen=True)
class QualityLimits:
    """The gate's limits for one modality; every field is a ``[quality]`` key in the bank."""

    min_sharpness: float = 0.3  # 1 - blur effect at the model's input side (0 blurred, 1 sharp)
    max_noise: float = 6.0  # estimated noise sigma at the model's input side, grey levels
    min_mean_luminance: float = 20.0  # 0-255
    max_mean_luminance: float = 225.0  # 0-255
    max_clipped_fraction: float = 0.25  # share of pixels at <= CLIP_DARK or >= CLIP_BRIGHT
    min_resolution_fraction: float = 0.5  # pixels across the region / the model's input size
    min_edge_gap: float = 0.01  # gap between the finding's box and the photo's edge / longest side
    colour: str = "colour"  # "colour", "greyscale" or "any"
    min_colourfulness: float = 8.0  # for colour = "colour"
    max_colourfulness: float = 6.0  # for colour = "greyscale"
    hints: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HINTS))
    # The bank's translations of its own hints: code -> {check name: advice}.
    translations: dict = field(default_factory=dict, compare=False, repr=False)

    def hint(self, name: str) -> str:
        """The retake advice, as a str that a page shows in its own language (webapp/i18n.py)."""
        text = self.hints.get(name) or DEFAULT_HINTS[name]
        if text == DEFAULT_HINTS.get(name):
            return Message(text)
        return Translated(text, {code: words["hints"][name] for code, words in self.translations.items()
                                 if name in words.get("hints", {})})


NUMERIC_LIMITS = tuple(f.name for f in fields(QualityLimits) if f.name not in {"colour", "hints", "translations"})
COLOUR_MODES = ("colour", "greyscale", "any")


def parse_quality_limits(raw: Any, errors: list[str]) -> QualityLimits:
    """``[quality]`` of a bank as ``QualityLimits``; mistakes go to ``errors`` with the key named."""
    defaults = QualityLimits()
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        errors.append("quality: [quality] must be a table")
        return defaults
    known = set(NUMERIC_LIMITS) | {"colour", "hints", "translations"}
    for key in sorted(set(raw) - known):
        errors.append(f"quality: unknown key {key!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key in NUMERIC_LIMITS:
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            errors.append(f"quality: {key} must be a non-negative number, got {value!r}")
            continue
        values[key] = float(value)
    colour = raw.get("colour", defaults.colour)
    if colour not in COLOUR_MODES:
        errors.append(f"quality: colour must be one of {', '.join(COLOUR_MODES)}, got {colour!r}")
        colour = defaults.colour
    hints = dict(DEFAULT_HINTS)
    raw_hints = raw.get("hints", {})
    if not isinstance(raw_hints, dict):
        errors.append("quality: hints must be a table of check name = \"retake advice\"")
        raw_hints = {}
    for name, text in raw_hints.items():
        if name not in DEFAULT_HINTS:
            errors.append(f"quality: hint for unknown check {name!r} (checks: {', '.join(DEFAULT_HINTS)})")
        elif not isinstance(text, str) or not text.strip():
            errors.append(f"quality: hint for {name!r} must be a non-empty string")
        else:
            hints[name] = text.strip()
    translations = {}
    raw_translations = raw.get("translations", {})
    if not isinstance(raw_translations, dict):
        errors.append("quality: translations must be a table of language codes")
        raw_translations = {}
    for code, entry in raw_translations.items():
        texts = entry.get("hints") if isinstance(entry, dict) else None
        if not isinstance(texts, dict) or set(entry) != {"hints"} or not all(
            name in DEFAULT_HINTS and isinstance(text, str) and text.strip() for name, text in texts.items()
        ):
            errors.append(f"quality: translations.{code} must hold only hints = {{check name = \"advice\"}}")
            continue
        translations[code] = {"hints": {name: " ".join(text.split()) for name, text in texts.items()}}
    limits = replace(defaults, colour=colour, hints=hints, translations=translations, **values)
    if limits.min_mean_luminance >= limits.max_mean_luminance:
        errors.append("quality: min_mean_luminance must be below max_mean_luminance")
    return limits


@dataclass(frozen=True)
class QualityCheck:
    """One measured property: its value, the limit it was held to, and what to do if it failed."""

    name: str
    value: float | None  # None: could not be measured here (e.g. framing without a located finding)
    limit: float
    passed: bool
    hint: str = ""  # retake advice; empty when passed

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "value": None if self.value is None else round(float(self.value), 4),
            "limit": round(float(self.limit), 4),
            "passed": self.passed,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class QualityReport:
    checks: tuple[QualityCheck, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[QualityCheck, ...]:
        return tuple(check for check in self.checks if not check.passed)

    @property
    def hints(self) -> list[str]:
        return [check.hint for check in self.failed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "checks": [check.as_dict() for check in self.checks]}


# ------------------------------------------------------------------ measures
def luminance(image: Image.Image) -> np.ndarray:
    """8-bit luminance (ITU-R 601, as Pillow's "L") as float32."""
    return np.asarray(image.convert("L"), dtype=np.float32)


def _measure_grey(image: Image.Image, side: int) -> np.ndarray:
    """Luminance resized so the longest side is ``side``: the scale the classifier sees.

    Blur and noise matter at the model's input scale: noise that resizing to it
    averages away cannot mislead the model, and a region smaller than the input
    is upscaled, which is exactly the blur the model then sees.
    """
    grey = luminance(image)
    height, width = grey.shape
    scale = side / max(height, width)
    size = (max(3, round(width * scale)), max(3, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(grey, size, interpolation=interpolation)


# Crete-Roffet's re-blur filter length (pixels at the measuring scale).
REBLUR_TAPS = 9
VARIATION_FLOOR = 2.0  # grey levels between neighbours below which a step is not detail


def sharpness(image: Image.Image, side: int = 448) -> float:
    """1 minus Crete-Roffet et al.'s (2007) blur effect, at the model's scale: 1 sharp, 0 blurred.

    The picture is blurred again with a strong averaging filter and the
    variation it loses is compared with the variation it had: a sharp picture
    loses most of it, an already blurred one almost none. It is a ratio, so a
    dark or low-contrast skin photo scores the same as a bright one of equal
    focus (a plain variance of the Laplacian would call dark skin "blurred").
    """
    from scipy.ndimage import uniform_filter1d

    grey = _measure_grey(image, side).astype(np.float64)
    blur_effects = []
    for axis in (0, 1):
        reblurred = uniform_filter1d(grey, REBLUR_TAPS, axis=axis, mode="reflect")
        variation = np.abs(np.diff(grey, axis=axis))
        kept = np.abs(np.diff(reblurred, axis=axis))
        # Steps of a grey level or two are 8-bit rounding and sensor noise,
        # not detail: counted, they make a featureless (very blurred) picture
        # look sharp, because re-blurring removes them.
        # They still count in the total, so a picture made mostly of them scores low.
        counted = variation > VARIATION_FLOOR
        lost = np.where(counted, np.maximum(0.0, variation - kept), 0.0)
        total = variation.sum()
        blur_effects.append(1.0 if total <= 0 else (total - lost.sum()) / total)
    return float(1.0 - max(blur_effects))


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_sigma(image: Image.Image, side: int = 448) -> float:
    """Immerkaer (1996) fast noise estimate, in grey levels, at the model's scale.

    The mask is the difference of two Laplacians, so smooth image structure
    cancels and what remains is (mostly) pixel noise. Strong edges and fine
    texture leak into it a little; the limit leaves room for that.
    """
    grey = _measure_grey(image, side)
    height, width = grey.shape
    response = cv2.filter2D(grey, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6.0 * (width - 2) * (height - 2)))


def exposure(image: Image.Image) -> tuple[float, float]:
    """(mean luminance 0-255, fraction of clipped pixels)."""
    grey = luminance(image)
    clipped = float(np.mean((grey <= CLIP_DARK) | (grey >= CLIP_BRIGHT)))
    return float(grey.mean()), clipped


def colourfulness(image: Image.Image) -> float:
    """Hasler and Suesstrunk's colourfulness: about 0 for greyscale, 15+ for an ordinary colour photo."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def edge_gap(box: tuple[int, int, int, int], image_size: tuple[int, int]) -> float:
    """Smallest gap between a box and the photo's edge, as a fraction of the photo's longest side."""
    x0, y0, x1, y1 = box
    width, height = image_size
    gap = min(x0, y0, width - x1, height - y1)
    return max(0.0, gap) / max(width, height)


# -------------------------------------------------------------------- the gate
def assess_quality(
    image: Image.Image,
    limits: QualityLimits,
    region: tuple[int, int, int, int] | None = None,
    finding: tuple[int, int, int, int] | None = None,
    input_size: int = 448,
) -> QualityReport:
    """Run every check on ``image``.

    ``region`` is the box (x0, y0, x1, y1) the classifier will see (the square
    crop around the finding; the whole photo when None); sharpness, noise,
    exposure and resolution are measured there. ``finding`` is the located
    finding's own box, for the framing check (skipped, and passed, without
    one: nothing located means nothing was cut off that we know of).
    ``input_size`` is the classifier's input side in pixels.
    """
    area = image.crop(region) if region is not None else image
    checks: list[QualityCheck] = []

    def check(name: str, value: float | None, limit: float, passed: bool) -> None:
        checks.append(QualityCheck(name, value, limit, passed, "" if passed else limits.hint(name)))

    value = sharpness(area, input_size)
    check("sharpness", value, limits.min_sharpness, value >= limits.min_sharpness)
    value = noise_sigma(area, input_size)
    check("noise", value, limits.max_noise, value <= limits.max_noise)
    mean, clipped = exposure(area)
    check("exposure_dark", mean, limits.min_mean_luminance, mean >= limits.min_mean_luminance)
    check("exposure_bright", mean, limits.max_mean_luminance, mean <= limits.max_mean_luminance)
    check("clipping", clipped, limits.max_clipped_fraction, clipped <= limits.max_clipped_fraction)
    across = float(min(area.size))
    needed = limits.min_resolution_fraction * input_size
    check("resolution", across, needed, across >= needed)
    if finding is not None:
        value = edge_gap(finding, image.size)
        check("framing", value, limits.min_edge_gap, value >= limits.min_edge_gap)
    else:
        check("framing", None, limits.min_edge_gap, True)
    if limits.colour != "any":
        value = colourfulness(image)
        if limits.colour == "colour":
            check("colour", value, limits.min_colourfulness, value >= limits.min_colourfulness)
        else:
            check("colour", value, limits.max_colourfulness, value <= limits.max_colourfulness)
    return QualityReport(tuple(checks))
