"""The quality gate's verdicts at the documented limits, on synthetic degradations.

The photos are the NCI melanoma photo (when present) and synthetic lesion
photos of every skin tone; the degradations are built here (tests/degrade.py).
The limits are those of prompts/dermatology.toml and prompts/chest_xray.toml;
docs/clinical-safety.md quotes the figures ``bench/quality_limits.py`` prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import degrade
from tests.helpers import NCI_PHOTO
from tests.synthetic import SKIN_TONES, make_lesion_photo
from webapp.cropping import square_region
from webapp.interfaces import Box
from webapp.prompt_bank import PromptBankError, load_prompt_bank, parse_prompt_bank
from webapp.quality import QualityLimits, assess_quality, colourfulness, noise_sigma, sharpness

ROOT = Path(__file__).resolve().parents[1]
DERMATOLOGY = load_prompt_bank(ROOT / "prompts" / "dermatology.toml")
CHEST = load_prompt_bank(ROOT / "prompts" / "chest_xray.toml")
LIMITS = DERMATOLOGY.quality
NCI_BOX = Box(410, 340, 1090, 800)


def synthetic(tone: str, seed: int = 0):
    return make_lesion_photo(seed, 1200, 900, skin_tone=tone, lesion_size=0.3, position=(0.5, 0.5), hair=True)


def verdict(image: Image.Image, box: Box, limits: QualityLimits = LIMITS):
    region = square_region(image.size, box)
    clipped = (max(0, region.x0), max(0, region.y0), min(image.width, region.x1), min(image.height, region.y1))
    report = assess_quality(image, limits, region=clipped, finding=box.as_list(), input_size=448)
    return report, {check.name: check for check in report.checks}


@pytest.fixture(scope="module")
def nci():
    if not NCI_PHOTO.exists():
        pytest.skip("the NCI test photo is not in shared/data")
    with Image.open(NCI_PHOTO) as image:
        return image.convert("RGB")


@pytest.mark.parametrize("tone", list(SKIN_TONES))
def test_an_untouched_photo_of_every_skin_tone_passes(tone):
    image, box = synthetic(tone)
    report, checks = verdict(image, box)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.hints == []
    assert set(checks) == {"sharpness", "noise", "exposure_dark", "exposure_bright", "clipping", "resolution", "framing", "colour"}


def test_the_nci_photo_passes_and_fails_blur_at_the_documented_sigma(nci):
    assert verdict(nci, NCI_BOX)[0].passed
    # The documented figures: sigma 4 px (1.9 px at the model's 448 px) still passes, 6 px fails, 25 px fails.
    assert verdict(degrade.blur(nci, 4), NCI_BOX)[1]["sharpness"].passed
    for sigma in (6, 12, 25):
        report, checks = verdict(degrade.blur(nci, sigma), NCI_BOX)
        assert not checks["sharpness"].passed and not report.passed
        assert "blurred" in checks["sharpness"].hint


@pytest.mark.parametrize("tone", list(SKIN_TONES))
def test_blur_fails_sharpness_on_every_skin_tone_and_sharpness_falls_with_sigma(tone):
    image, box = synthetic(tone)
    region = square_region(image.size, box)
    crop = image.crop((max(0, region.x0), max(0, region.y0), min(image.width, region.x1), min(image.height, region.y1)))
    values = [sharpness(degrade.blur(crop, sigma)) for sigma in (0, 1, 2, 3, 4, 6, 8, 12, 16, 25)]
    assert all(a >= b - 1e-6 for a, b in zip(values, values[1:])), values  # monotonic in sigma
    assert values[0] >= LIMITS.min_sharpness
    for sigma in (4, 8, 25):
        assert not verdict(degrade.blur(image, sigma), box)[1]["sharpness"].passed


def test_sharpness_is_normalised_for_size(nci):
    # The same scene at full size and at half size measures about the same.
    half, scale = degrade.downscale(nci, 0.5)
    full = sharpness(nci.crop(NCI_BOX.as_list()))
    small = sharpness(half.crop(degrade.scale_box(NCI_BOX, scale).as_list()))
    assert abs(full - small) < 0.1


@pytest.mark.parametrize("tone", ["I", "III", "VI"])
def test_a_near_black_frame_fails_exposure_with_the_lamp_hint(tone):
    image, box = synthetic(tone)
    report, checks = verdict(degrade.gamma(image, 1.0, gain=0.05), box)
    assert not report.passed
    assert not checks["exposure_dark"].passed
    assert checks["exposure_dark"].hint.startswith("Too dark: move to daylight or switch on a lamp")


def test_dark_skin_in_good_light_is_not_called_too_dark():
    # Equity: the darkest synthetic skin (mean luminance ~56) passes exposure,
    # even a little under-exposed (gamma 1.5, mean ~27).
    image, box = synthetic("VI")
    assert verdict(image, box)[1]["exposure_dark"].passed
    assert verdict(degrade.gamma(image, 1.5), box)[1]["exposure_dark"].passed
    assert not verdict(degrade.gamma(image, 2.5), box)[1]["exposure_dark"].passed


def test_over_exposure_fails_brightness_or_clipping():
    image, box = synthetic("I")
    for gain in (1.4, 2.0):
        report, checks = verdict(degrade.gamma(image, 1.0, gain=gain), box)
        assert not checks["clipping"].passed
        assert "blown-out" in checks["clipping"].hint
    assert not verdict(degrade.gamma(image, 0.2), box)[1]["exposure_bright"].passed


@pytest.mark.parametrize("tone", ["I", "IV", "VI"])
def test_noise_fails_at_the_documented_sigma(tone):
    image, box = synthetic(tone)
    assert verdict(degrade.noise(image, 10), box)[1]["noise"].passed
    report, checks = verdict(degrade.noise(image, 30), box)
    assert not checks["noise"].passed and "grainy" in checks["noise"].hint
    levels = [noise_sigma(degrade.noise(image, s)) for s in (0, 10, 20, 30)]
    assert levels == sorted(levels)


def test_downscaling_fails_resolution_below_half_the_model_input(nci):
    limit = LIMITS.min_resolution_fraction * 448
    for factor, passes in ((1.0, True), (0.35, True), (0.2, False), (0.1, False)):
        small, scale = degrade.downscale(nci, factor)
        checks = verdict(small, degrade.scale_box(NCI_BOX, scale))[1]
        assert checks["resolution"].passed is passes, (factor, checks["resolution"])
        assert checks["resolution"].limit == limit
        if not passes:
            assert "move closer" in checks["resolution"].hint


@pytest.mark.parametrize("keep", [1.0, 0.7, 0.5])
def test_a_lesion_cut_by_the_edge_fails_framing(keep):
    image, box = synthetic("III")
    cut, cut_box = degrade.cut_through(image, box, keep)
    report, checks = verdict(cut, cut_box)
    assert not checks["framing"].passed and "cut off" in checks["framing"].hint
    whole, whole_box = degrade.cut_through(image, box, 1.2)
    assert verdict(whole, whole_box)[1]["framing"].passed


def test_framing_is_not_judged_without_a_located_finding():
    image, _ = synthetic("II")
    checks = {c.name: c for c in assess_quality(image, LIMITS).checks}
    assert checks["framing"].value is None and checks["framing"].passed


def test_colour_check_wants_colour_for_skin_and_greyscale_for_chest_xray():
    image, box = synthetic("II")
    grey = degrade.greyscale(image)
    assert colourfulness(grey) < 1.0 < colourfulness(image)
    assert not verdict(grey, box)[1]["colour"].passed
    assert verdict(image, box)[1]["colour"].passed
    chest = {c.name: c for c in assess_quality(grey, CHEST.quality).checks}
    assert chest["colour"].passed
    chest = {c.name: c for c in assess_quality(image, CHEST.quality).checks}
    assert not chest["colour"].passed and "greyscale" in chest["colour"].hint


def test_checks_serialise_with_name_value_limit_passed_hint():
    image, box = synthetic("II")
    data = verdict(degrade.blur(image, 25), box)[0].as_dict()
    assert data["passed"] is False
    sharp = next(c for c in data["checks"] if c["name"] == "sharpness")
    assert set(sharp) == {"name", "value", "limit", "passed", "hint"}
    assert sharp["passed"] is False and sharp["limit"] == LIMITS.min_sharpness and sharp["hint"]


def _bank(extra: str) -> dict:
    import tomllib

    return tomllib.loads(
        'name = "t"\ngroup_tags = ["benign", "malignant"]\n[rules]\nhigh_risk_groups = ["malignant"]\n[template_sets.a]\ntemplates = ["a {}."]\n[[conditions]]\nlabel = "X"\ngroups = ["benign"]\n'
        'descriptions = ["x"]\n' + extra
    )


def test_bank_quality_limits_are_validated_with_the_key_named():
    with pytest.raises(PromptBankError, match="min_sharpness must be a non-negative number"):
        parse_prompt_bank(_bank('[quality]\nmin_sharpness = "high"\n'))
    with pytest.raises(PromptBankError, match="unknown key 'sharpnes'"):
        parse_prompt_bank(_bank("[quality]\nsharpnes = 0.2\n"))
    with pytest.raises(PromptBankError, match="colour must be one of"):
        parse_prompt_bank(_bank('[quality]\ncolour = "sepia"\n'))
    with pytest.raises(PromptBankError, match="hint for unknown check"):
        parse_prompt_bank(_bank('[quality.hints]\nfocus = "x"\n'))
    bank = parse_prompt_bank(_bank('[quality]\nmin_sharpness = 0.4\n[quality.hints]\nsharpness = "Hold still."\n'))
    assert bank.quality.min_sharpness == 0.4 and bank.quality.hint("sharpness") == "Hold still."
    assert bank.quality.hint("noise").startswith("Too grainy")
