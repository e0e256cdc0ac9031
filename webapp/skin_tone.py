"""Skin tone of the skin around a finding, as an Individual Typology Angle (ITA).

ITA = arctan((L* - 50) / b*) in degrees, from CIELAB (Chardon et al. 1991),
is the colorimetric stand-in for the Fitzpatrick type that dermatology AI
audits use when a data set records none. Bands (Del Bino and Bernerd 2013):
very light > 55 > light > 41 > intermediate > 28 > tan > 10 > brown > -30 > dark.

Measured on the skin only: the ring between the lesion's box (grown a little,
so its soft border stays out) and the square region around it, with hair
(thin dark lines found by a morphological black-hat, as DullRazor does) and
any remaining markedly darker pixels (lesion satellites, shadows) excluded.
The median L* and b* of what remains give the angle. A photo's white balance
and lighting shift ITA, so it is an estimate for a caution, never a label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .i18n import N_, Message

# (lower bound in degrees, band id, words); checked top down.
# The words are Messages: made on the worker, shown in the reader's language.
BANDS = (
    (55.0, "very_light", Message(N_("very light"))),
    (41.0, "light", Message(N_("light"))),
    (28.0, "intermediate", Message(N_("intermediate"))),
    (10.0, "tan", Message(N_("tan"))),
    (-30.0, "brown", Message(N_("brown"))),
    (-math.inf, "dark", Message(N_("dark"))),
)
LESION_GROWTH = 0.15  # the lesion box is grown by this share of its side before it is excluded
HAIR_KERNEL = 11  # black-hat element at WORK_SIDE: wider than a hair, narrower than a lesion
HAIR_CONTRAST = 12.0  # L* units of black-hat response that count as hair
DARKER_THAN_SKIN = 15.0  # L* below the ring's median that is not skin
WORK_SIDE = 512
MIN_SKIN_PIXELS = 200  # at WORK_SIDE; fewer and there is no estimate


@dataclass(frozen=True)
class SkinTone:
    ita: float  # degrees
    band: str  # one of the BANDS ids
    label: str  # the band in words
    skin_fraction: float  # share of the ring that was used as skin

    def as_dict(self) -> dict:
        return {"ita": round(self.ita, 1), "band": self.band, "label": self.label}


def ita_degrees(lightness: float, b_star: float) -> float:
    """ITA in degrees; atan2 keeps it defined (and right) for b* near 0 or negative."""
    return math.degrees(math.atan2(lightness - 50.0, b_star))


def band_for(ita: float) -> tuple[str, str]:
    for lower, band, label in BANDS:
        if ita > lower:
            return band, label
    return BANDS[-1][1], BANDS[-1][2]


def estimate_skin_tone(
    image: Image.Image,
    lesion: tuple[int, int, int, int] | None,
    region: tuple[int, int, int, int] | None = None,
) -> SkinTone | None:
    """ITA of the skin in ``region`` (default: the whole photo) outside ``lesion``; None if too little skin."""
    width, height = image.size
    if region is None:
        region = (0, 0, width, height)
    x0, y0 = max(0, region[0]), max(0, region[1])
    x1, y1 = min(width, region[2]), min(height, region[3])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    area = image.convert("RGB").crop((x0, y0, x1, y1))
    scale = min(1.0, WORK_SIDE / max(area.size))
    if scale < 1:
        area = area.resize((max(1, round(area.width * scale)), max(1, round(area.height * scale))), Image.Resampling.BOX)
    rgb = np.asarray(area)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L 0-100, b* in units
    keep = np.ones(lab.shape[:2], dtype=bool)
    if lesion is not None:
        grow_x = LESION_GROWTH * (lesion[2] - lesion[0])
        grow_y = LESION_GROWTH * (lesion[3] - lesion[1])
        lx0 = int(max(0, (lesion[0] - grow_x - x0) * scale))
        ly0 = int(max(0, (lesion[1] - grow_y - y0) * scale))
        lx1 = int(math.ceil(max(0, (lesion[2] + grow_x - x0) * scale)))
        ly1 = int(math.ceil(max(0, (lesion[3] + grow_y - y0) * scale)))
        keep[ly0:ly1, lx0:lx1] = False
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (HAIR_KERNEL, HAIR_KERNEL))
    hair = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel) > HAIR_CONTRAST * 2.55
    hair = cv2.dilate(hair.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    keep &= ~hair
    ring = int(keep.sum())
    if ring < MIN_SKIN_PIXELS:
        return None
    lightness = lab[..., 0]
    keep &= lightness >= np.median(lightness[keep]) - DARKER_THAN_SKIN
    used = int(keep.sum())
    if used < MIN_SKIN_PIXELS:
        return None
    ita = ita_degrees(float(np.median(lightness[keep])), float(np.median(lab[..., 2][keep])))
    band, label = band_for(ita)
    return SkinTone(ita=ita, band=band, label=label, skin_fraction=used / keep.size)
