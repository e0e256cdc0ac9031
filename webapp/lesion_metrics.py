"""How a lesion changed between photos: high-risk score, embedding distance, relative size and asymmetry.

Sizes are relative: without a ruler or a known scale in the photo, the
located region's area can only be given as a share of the photo's area, which
also changes with the camera's distance and zoom. The comparison says so next
to every size.

The region: inside the box the detector found, on the crop the model saw,
the lesion is the largest dark component (Otsu threshold on CIE L*, as the
classical localizer uses). Its asymmetry is the classic dermoscopy index
(Stoecker et al.): fold the mask about its two principal axes and take the
share of the area that does not overlap, averaged over both axes (0 = a
perfect ellipse; an irregular lesion is 0.2 or more). A photo where nothing
was located has no region, and the comparison says that instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask_babel import gettext as _

from .i18n import number, percent

import cv2
import numpy as np

from .images import open_clean


@dataclass(frozen=True)
class ChangeThresholds:
    """When a change between two consecutive photos is flagged (docs/lesions.md says why)."""

    high_risk_points: float = 0.15  # absolute change of the high-risk groups' combined score
    embedding_distance: float = 0.10  # 1 - cosine; = 1 - the same-lesion similarity threshold
    relative_area: float = 0.25  # |new / old - 1| of the area relative to the photo
    asymmetry: float = 0.10  # absolute change of the asymmetry index


@dataclass(frozen=True)
class RegionMeasure:
    area_fraction: float  # the region's area / the photo's area
    asymmetry: float  # 0 (symmetric) .. about 1


@dataclass
class Change:
    """From one photo to the next in date order."""

    days: int
    high_risk_delta: float | None
    embedding_distance: float | None
    relative_area_change: float | None  # new / old - 1
    asymmetry_delta: float | None
    flags: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


def measure_region(result) -> RegionMeasure | None:
    """The located region's relative area and asymmetry, from the crop kept with the result."""
    if result is None or not result.analysed or result.detection is None or result.crop_region is None or not result.crop_jpeg:
        return None
    crop = np.asarray(open_clean(result.crop_jpeg).convert("RGB"))
    side = crop.shape[0]
    region = result.crop_region
    scale = side / region.width  # crop pixels per photo pixel (the crop is a square of the region)
    box = result.detection.box
    x0 = max(0, int(np.floor((box.x0 - region.x0) * scale)))
    y0 = max(0, int(np.floor((box.y0 - region.y0) * scale)))
    x1 = min(side, int(np.ceil((box.x1 - region.x0) * scale)))
    y1 = min(side, int(np.ceil((box.y1 - region.y0) * scale)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    lightness = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    inside = lightness[y0:y1, x0:x1]
    scaled = np.clip(inside * 2.55, 0, 255).astype(np.uint8)
    _, dark = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = labels == biggest
    area_crop_px = float(mask.sum())
    photo_area = float(result.image_size[0] * result.image_size[1])
    area_fraction = area_crop_px / (scale * scale) / photo_area if photo_area else 0.0
    return RegionMeasure(area_fraction=area_fraction, asymmetry=asymmetry_index(mask))


def asymmetry_index(mask: np.ndarray) -> float:
    """Mean non-overlapping share when the mask is folded about each principal axis through its centroid."""
    mask = mask.astype(np.uint8)
    area = float(mask.sum())
    if area == 0:
        return 0.0
    moments = cv2.moments(mask, binaryImage=True)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    angle = 0.5 * np.degrees(np.arctan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
    # Room for any rotation: pad to a square canvas centred on the centroid.
    half = int(np.ceil(np.hypot(*mask.shape))) + 2
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    ys, xs = np.nonzero(mask)
    canvas[np.round(ys - cy).astype(int) + half, np.round(xs - cx).astype(int) + half] = 1
    rotation = cv2.getRotationMatrix2D((float(half), float(half)), angle, 1.0)
    aligned = cv2.warpAffine(canvas, rotation, canvas.shape[::-1], flags=cv2.INTER_NEAREST)
    aligned_area = float(aligned.sum()) or area
    scores = [np.logical_xor(aligned, np.flip(aligned, axis)).sum() / (2 * aligned_area) for axis in (0, 1)]
    return float(np.mean(scores))


def compare(earlier, later, thresholds: ChangeThresholds = ChangeThresholds()) -> Change:
    """``earlier``/``later``: dicts with taken_on, high_risk (float or None), embedding (array or None), region."""
    from .lesions import cosine

    days = (later["taken_on"] - earlier["taken_on"]).days
    high_risk = None
    if earlier["high_risk"] is not None and later["high_risk"] is not None:
        high_risk = later["high_risk"] - earlier["high_risk"]
    distance = None
    if earlier["embedding"] is not None and later["embedding"] is not None:
        distance = 1.0 - cosine(earlier["embedding"], later["embedding"])
    area = asym = None
    if earlier["region"] is not None and later["region"] is not None:
        if earlier["region"].area_fraction > 0:
            area = later["region"].area_fraction / earlier["region"].area_fraction - 1.0
        asym = later["region"].asymmetry - earlier["region"].asymmetry
    change = Change(days, high_risk, distance, area, asym)
    if high_risk is not None and abs(high_risk) >= thresholds.high_risk_points:
        words = dict(points=number(abs(high_risk) * 100), limit=number(thresholds.high_risk_points * 100))
        change.flags.append(
            _("the high-risk score rose by %(points)s points (flagged from %(limit)s)", **words) if high_risk > 0 else
            _("the high-risk score fell by %(points)s points (flagged from %(limit)s)", **words)
        )
    if distance is not None and distance >= thresholds.embedding_distance:
        change.flags.append(_(
            "the model sees the crops as different (embedding distance %(distance)s, flagged from %(limit)s)",
            distance=number(distance, 2), limit=number(thresholds.embedding_distance, 2),
        ))
    if area is not None and abs(area) >= thresholds.relative_area:
        words = dict(change=percent(abs(area), 0), limit=percent(thresholds.relative_area, 0))
        change.flags.append(
            _("the located region's relative size grew by %(change)s (flagged from %(limit)s; sizes are relative, "
              "see the note)", **words) if area > 0 else
            _("the located region's relative size shrank by %(change)s (flagged from %(limit)s; sizes are relative, "
              "see the note)", **words)
        )
    if asym is not None and abs(asym) >= thresholds.asymmetry:
        words = dict(change=number(abs(asym), 2), limit=number(thresholds.asymmetry, 2))
        change.flags.append(
            _("its asymmetry rose by %(change)s (flagged from %(limit)s)", **words) if asym > 0 else
            _("its asymmetry fell by %(change)s (flagged from %(limit)s)", **words)
        )
    return change
