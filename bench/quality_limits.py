"""Print the quality gate's measures under synthetic degradations: the figures behind the bank's limits.

    PYTHONPATH=. python -m bench.quality_limits

For the NCI melanoma photo (when /work/shared/data or PRIVASCAN_TEST_PHOTO has
it) and synthetic lesion photos of six skin tones, it measures every check on
the region the classifier would see while blurring (sigma 0-25 px), changing
exposure (gamma), adding noise, downscaling and cutting the lesion with the
photo's edge, and prints one table per degradation with the bank's verdict.
``docs/clinical-safety.md`` quotes these tables; ``tests/test_quality.py``
asserts the verdicts at the documented limits.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from tests import degrade
from tests.synthetic import SKIN_TONES, make_lesion_photo
from webapp.cropping import square_region
from webapp.prompt_bank import load_prompt_bank
from webapp.quality import assess_quality

ROOT = Path(__file__).resolve().parents[1]
PHOTO = Path(os.environ.get("PRIVASCAN_TEST_PHOTO", "/work/shared/data/nci-melanoma-1800x1010.jpg"))
PHOTO_BOX = (410, 340, 1090, 800)


def photos():
    from webapp.interfaces import Box

    found = []
    if PHOTO.exists():
        with Image.open(PHOTO) as image:
            found.append(("nci", image.convert("RGB"), Box(*PHOTO_BOX)))
    for seed, tone in enumerate(SKIN_TONES):
        image, box = make_lesion_photo(seed, 1200, 900, skin_tone=tone, lesion_size=0.3, position=(0.5, 0.5), hair=True)
        found.append((f"synthetic-{tone}", image, box))
    return found


def measure(image, box, limits, input_size=448):
    region = square_region(image.size, box)
    clipped = (max(0, region.x0), max(0, region.y0), min(image.width, region.x1), min(image.height, region.y1))
    report = assess_quality(image, limits, region=clipped, finding=box.as_list(), input_size=input_size)
    return {check.name: check for check in report.checks}, report.passed


def table(title, rows, names, photos_list, limits):
    print(f"\n## {title}")
    header = "| setting | " + " | ".join(f"{label} {name}" for label, *_ in photos_list for name in names) + " |"
    print(header)
    print("|" + "---|" * (1 + len(names) * len(photos_list)))
    for setting, make in rows:
        cells = []
        for label, image, box in photos_list:
            degraded, degraded_box = make(image, box)
            checks, _ = measure(degraded, degraded_box, limits)
            for name in names:
                check = checks[name]
                value = "-" if check.value is None else f"{check.value:.3g}"
                cells.append(f"{value} {'ok' if check.passed else 'FAIL'}")
        print(f"| {setting} | " + " | ".join(cells) + " |")


def main() -> None:
    bank = load_prompt_bank(ROOT / "prompts" / "dermatology.toml")
    limits = bank.quality
    found = photos()
    shown = [found[0], found[1], found[-1]]  # the photo, the lightest and the darkest synthetic skin
    print(f"Limits (dermatology bank): {limits}")
    table("Gaussian blur (sigma, px of the original photo)",
          [(s, lambda im, b, s=s: (degrade.blur(im, s), b)) for s in (0, 1, 2, 3, 4, 6, 8, 12, 16, 25)],
          ["sharpness"], shown, limits)
    table("Exposure (gamma; >1 darker)",
          [(g, lambda im, b, g=g: (degrade.gamma(im, g), b)) for g in (0.2, 0.3, 0.4, 0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)],
          ["exposure_dark", "exposure_bright", "clipping"], shown, limits)
    table("Over-exposure (gain)",
          [(g, lambda im, b, g=g: (degrade.gamma(im, 1.0, gain=g), b)) for g in (1.0, 1.2, 1.4, 1.6, 2.0)],
          ["exposure_bright", "clipping"], shown, limits)
    table("Under-exposure (gain)",
          [(g, lambda im, b, g=g: (degrade.gamma(im, 1.0, gain=g), b)) for g in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)],
          ["exposure_dark", "clipping"], shown, limits)
    table("Gaussian noise (sigma, grey levels)",
          [(s, lambda im, b, s=s: (degrade.noise(im, s), b)) for s in (0, 2, 4, 6, 8, 10, 15, 20, 30)],
          ["noise"], shown, limits)

    def down(f):
        def make(im, b):
            small, scale = degrade.downscale(im, f)
            return small, degrade.scale_box(b, scale)
        return make

    table("Downscaling (factor of the width)",
          [(f, down(f)) for f in (1.0, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1)],
          ["resolution", "sharpness"], shown, limits)
    table("Finding cut by the photo's edge (share of its width kept)",
          [(k, lambda im, b, k=k: degrade.cut_through(im, b, k)) for k in (1.2, 1.05, 1.0, 0.9, 0.7, 0.5)],
          ["framing"], shown, limits)
    table("Greyscale", [("colour", lambda im, b: (im, b)), ("greyscale", lambda im, b: (degrade.greyscale(im), b))],
          ["colour"], shown, limits)


if __name__ == "__main__":
    main()
