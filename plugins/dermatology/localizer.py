"""A classical lesion localizer: no weights, no training data, a few milliseconds.

It is the dermatology plugin's detector when no lesion-trained YOLO weights are
configured. The idea is the one dermatologists' image-analysis papers have used
for decades: a pigmented lesion is a compact region clearly darker than the
skin around it. The steps, each there for a failure it prevents:

1. Work on a copy whose longest side is 512 px: the shape of a lesion does not
   need more, and every later step becomes cheap.
2. Remove hair first (DullRazor: a morphological black-hat finds thin dark
   lines; they are replaced by the closed image). Hair is darker than most
   lesions and would otherwise be the "largest dark thing".
3. Model the skin, not the image: fit a smooth (quadratic) surface to the
   lightness of the pixels that look like skin, re-fitting without the dark
   outliers. Vignetting, a ring light's fall-off and a sun-tanned gradient end
   up in the model instead of in the lesion mask.
4. Score every pixel by how much darker it is than the modelled skin, relative
   to the skin's own lightness, so that the same lesion scores the same on
   light and on dark skin.
5. Threshold (Otsu, never below a floor so that freckles and skin texture on a
   plain photo stay below it, never above a ceiling so that a very dark
   lesion's paler rim is kept), clean up, and keep the largest plausible
   component: not too small, not most of the picture, compact, not hugging the
   border (dark corners do), and clearly darker than skin. A photo whose
   skin model is not skin-coloured (grey, blue, green) is declined.

Its limits: it looks for darker-than-skin lesions, so pale, pink or purely
inflammatory findings are not found (the caller then classifies the whole
photo, which is the safe fallback); dermoscopy photos whose black circular frame
fills the corners are handled by the border rule, not specially.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from webapp.i18n import N_, Message
from webapp.interfaces import Box, Detection

WORK_SIDE = 512  # longest side of the working copy, in pixels
# Hair: DullRazor's structuring element must be wider than a hair and narrower
# than a lesion. At 512 px hairs are 1-4 px wide and lesions tens of pixels.
HAIR_KERNEL = 11
HAIR_CONTRAST = 12.0  # black-hat response (L units, 0-100) that counts as hair
# Darkness relative to the modelled skin, in percent of the skin's lightness.
# Texture and freckles stay under ~12 %; pigmented lesions are 25-70 % darker.
THRESHOLD_FLOOR = 16.0
THRESHOLD_CEILING = 40.0
MIN_MEAN_DARKNESS = 24.0  # a component must on average be this much darker
MIN_AREA_FRACTION = 0.0005  # smaller (a disc under ~2.5 % of the picture's width) is a pore
MAX_AREA_FRACTION = 0.6  # larger than this is lighting, a shadow or not skin
MAX_BORDER_TOUCH = 0.3  # share of a component's box perimeter lying on the image border
# Lab hue (degrees) and chroma the modelled skin must have (see _looks_like_skin).
SKIN_HUE = (15.0, 85.0)
SKIN_CHROMA = (4.0, 55.0)
MIN_SOLIDITY = 0.6  # area / convex-hull area: lesions are compact, hair and shadows are not


class ClassicalLesionLocalizer:
    """Finds the most plausible pigmented lesion by colour threshold; see the module docstring."""

    name = "classical"

    def locate(self, image: Image.Image) -> Detection | None:
        width, height = image.size
        if min(height, width) < 16:
            return None
        if image.mode != "RGB":
            image = image.convert("RGB")
        scale = min(1.0, WORK_SIDE / max(height, width))
        # Pillow's integer box reduction first: on a 12-megapixel photo it is
        # several times faster than converting the full-size array.
        factor = int(1 / scale)
        if factor >= 2:
            image = image.reduce(factor)
        rgb = np.asarray(image)
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

        lab = _to_lab(_remove_hair(rgb))
        skin_lightness, typical_skin = _fit_skin(lab)
        if not _looks_like_skin(typical_skin):
            return None
        # Percent darker than the modelled skin: tone-independent contrast.
        darkness = 100.0 * (skin_lightness - lab[..., 0]) / np.maximum(skin_lightness, 5.0)

        found = _best_component(darkness)
        if found is None:
            return None
        (x0, y0, x1, y1), confidence = found
        # Map back to original pixels, rounding outwards so the lesion stays inside.
        box = Box(
            max(0, int(np.floor(x0 / scale))),
            max(0, int(np.floor(y0 / scale))),
            min(width, int(np.ceil(x1 / scale))),
            min(height, int(np.ceil(y1 / scale))),
        )
        return Detection(box=box, confidence=confidence, method=Message(N_("classical colour threshold")))


def _remove_hair(rgb: np.ndarray) -> np.ndarray:
    """DullRazor-style: find thin dark lines with a black-hat and fill them from the closed image."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (HAIR_KERNEL, HAIR_KERNEL))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    # 8-bit gray levels; HAIR_CONTRAST is in L units, roughly 2.55 gray levels each.
    hair = blackhat > HAIR_CONTRAST * 2.55
    if not hair.any():
        return rgb
    hair = cv2.dilate(hair.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    closed = cv2.morphologyEx(rgb, cv2.MORPH_CLOSE, kernel)
    out = rgb.copy()
    out[hair] = closed[hair]
    return out


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab with L in 0-100 (float input keeps cv2 from rescaling the channels)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _fit_skin(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model the skin's lightness as a quadratic surface fitted to skin-like pixels.

    Returns the surface at ``lab``'s size and the median Lab colour of the
    pixels judged to be skin. The fit runs on a 64-px-wide thumbnail (a smooth
    surface needs few samples) and is then upsampled, which keeps it ~1 ms.
    """
    height, width = lab.shape[:2]
    tw = 64
    th = max(4, round(height * tw / width))
    thumb = cv2.resize(lab, (tw, th), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:th, 0:tw]
    x = ((xx + 0.5) / tw * 2 - 1).ravel()
    y = ((yy + 0.5) / th * 2 - 1).ravel()
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    values = thumb.reshape(-1, 3).astype(np.float64)
    lightness = values[:, 0]
    # Start from the lighter 70 %: a lesion covers less than that of a photo of it.
    inliers = lightness >= np.percentile(lightness, 30)
    for _ in range(4):
        a = design[inliers]
        # Normal equations of a 6-term least squares: tiny, and no LAPACK thread start-up.
        coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(6), a.T @ lightness[inliers])
        residual = lightness - design @ coef
        spread = 1.4826 * np.median(np.abs(residual[inliers])) + 0.5
        # Drop what is clearly darker than skin; keep lighter pixels (glare is rare and harmless).
        inliers = residual > -2.5 * spread
    surface = (design @ coef).reshape(th, tw).astype(np.float32)
    skin = cv2.resize(surface, (width, height), interpolation=cv2.INTER_LINEAR)
    typical = np.median(values[inliers], axis=0) if inliers.any() else np.zeros(3)
    return skin, typical


def _looks_like_skin(skin_lab: np.ndarray) -> bool:
    """Skin of every tone is a moderately saturated orange: Lab hue about 40-70 degrees.

    The accepted range is much wider than that to tolerate a phone's white
    balance; it still turns away grey, blue, green and vivid yellow pictures.
    """
    _, a, b = skin_lab
    hue = np.degrees(np.arctan2(b, a))
    chroma = np.hypot(a, b)
    return bool(SKIN_CHROMA[0] <= chroma <= SKIN_CHROMA[1] and SKIN_HUE[0] <= hue <= SKIN_HUE[1])


def _best_component(darkness: np.ndarray):
    """Threshold the darkness map and return ((x0, y0, x1, y1), confidence) of the best component."""
    height, width = darkness.shape
    candidates = darkness[darkness > 0]
    if candidates.size == 0:
        return None
    scaled = np.clip(candidates, 0, 100).astype(np.uint8).reshape(-1, 1)
    otsu, _ = cv2.threshold(scaled, 0, 100, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu, THRESHOLD_FLOOR, THRESHOLD_CEILING))
    mask = (darkness > threshold).astype(np.uint8)

    # Opening cuts thin bridges (hair remnants, skin creases) between a lesion
    # and dark corners; closing joins the patches of a variegated lesion.
    side = max(3, round(min(height, width) / 100) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best, best_score = None, 0.0
    total = float(height * width)
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        if not MIN_AREA_FRACTION <= area / total <= MAX_AREA_FRACTION:
            continue
        component = labels[y : y + h, x : x + w] == index
        on_border = (
            (component[0, :].sum() if y == 0 else 0)
            + (component[-1, :].sum() if y + h == height else 0)
            + (component[:, 0].sum() if x == 0 else 0)
            + (component[:, -1].sum() if x + w == width else 0)
        )
        if on_border > MAX_BORDER_TOUCH * 2 * (w + h):
            continue
        # Solidity from outer contours, so a lesion with a paler centre (a
        # regressing melanoma, a halo naevus) is judged by its outline.
        contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outline_area = sum(cv2.contourArea(c) for c in contours)
        hull_area = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
        solidity = min(1.0, outline_area / max(hull_area, 1.0))
        if solidity < MIN_SOLIDITY:
            continue
        mean_darkness = float(darkness[y : y + h, x : x + w][component].mean())
        if mean_darkness < MIN_MEAN_DARKNESS:
            continue
        score = area * mean_darkness
        if score > best_score:
            # A heuristic in [0, 1], not a probability: darker and more compact is surer.
            confidence = float(np.clip((mean_darkness - MIN_MEAN_DARKNESS) / 30.0 + 0.3, 0, 1) * solidity)
            best, best_score = ((x, y, x + w, y + h), round(confidence, 3)), score
    return best
