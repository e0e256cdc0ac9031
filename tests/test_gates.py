"""The gates in the real pipeline: quality before the forward pass, scope from the same pass, tiers, calibration.

The scope and tier logic is driven by the scripted test classifier plugin
(tests/plugins/scripted_classifier.py), whose scores a test chooses, because
the tiny random model cannot tell skin from an X-ray; the last tests run the
tiny MedSigLIP through the same path end to end.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from tests import degrade
from tests.helpers import NCI_PHOTO
from tests.plugins import scripted_classifier as scripted
from tests.synthetic import make_lesion_photo
from webapp.config import config_from_environment
from webapp.interfaces import CANT_ASSESS
from webapp.pipeline import analyse_image, read
from webapp.plugins import build_registry, make_plugin_manager

PLUGINS = ("plugins.medsiglip", "plugins.dermatology", "plugins.chest_xray", "tests.plugins.scripted_classifier")


@pytest.fixture(scope="module")
def registry():
    config = {**config_from_environment(), "DEFAULT_PLUGINS": PLUGINS, "PLUGIN_ALLOWLIST": ()}
    return build_registry(make_plugin_manager(config), config)


@pytest.fixture(autouse=True)
def fresh_script():
    scripted.reset()
    yield
    scripted.reset()


@pytest.fixture(scope="module")
def photo():
    if NCI_PHOTO.exists():
        with Image.open(NCI_PHOTO) as image:
            return image.convert("RGB")
    return make_lesion_photo(0, 1200, 900, skin_tone="II", position=(0.5, 0.5))[0]


def analyse(image, registry, app="scripted", **kwargs):
    return analyse_image(image, registry.app(app), registry, explain=False, **kwargs)


def test_a_good_skin_photo_is_assessed_with_a_tier_and_skin_tone(photo, registry):
    scripted.SCRIPT.update(melanoma=0.8, melanocytic_nevus=0.1)
    result = analyse(photo, registry)
    assert result.quality.passed and result.scope.in_scope is True and result.scope.score == pytest.approx(0.9)
    assert (result.assessable, result.tier) == (True, "refer_urgently")
    assert result.skin_tone is not None and result.skin_tone.band in {"very_light", "light", "intermediate"}
    assert not result.calibrated
    assert scripted.SEEN == [(448, 448)]  # one forward pass, on the classifier's input size


def test_a_blurred_photo_is_cant_assess_before_any_forward_pass(photo, registry):
    scripted.SCRIPT.update(melanocytic_nevus=0.9)
    result = analyse(degrade.blur(photo, 25), registry)
    assert scripted.SEEN == []  # the gate ran before classification
    assert not result.analysed and result.tier == CANT_ASSESS and not result.assessable
    assert [c.name for c in result.quality.failed] == ["sharpness"]
    assert result.triage.reasons[0].startswith("Too blurred")
    assert result.crop_jpeg  # the card still shows what was judged


def test_analyse_anyway_marks_the_result_low_quality(photo, registry):
    scripted.SCRIPT.update(melanocytic_nevus=0.9)
    result = analyse(degrade.blur(photo, 25), registry, analyse_anyway=True)
    assert result.analysed and result.low_quality and not result.assessable
    assert result.tier == "monitor" and not result.triage.show_advice
    assert read(result, registry.banks["dermatology"]).triage.low_quality


def test_a_near_black_frame_gets_no_advice_and_the_lamp_hint(photo, registry):
    scripted.SCRIPT.update(tinea_corporis=0.95)  # the "antifungal creams" advice must not appear
    result = analyse(degrade.gamma(photo, 1.0, gain=0.04), registry)
    assert result.tier == CANT_ASSESS and not result.analysed
    assert any(h.startswith("Too dark: move to daylight or switch on a lamp") for h in result.triage.reasons)


def test_a_greyscale_picture_is_out_of_scope_for_dermatology(photo, registry):
    grey = degrade.greyscale(photo)
    result = analyse(grey, registry)
    assert "colour" in [c.name for c in result.quality.failed] and result.tier == CANT_ASSESS
    anyway = analyse(grey, registry, analyse_anyway=True)
    assert anyway.scope.in_scope is False and anyway.scores is None  # no result, not even a heatmap
    assert anyway.triage.reasons == ["This does not look like a skin photo."]
    assert anyway.tier == CANT_ASSESS


def test_a_skin_photo_sent_as_chest_xray_is_refused(photo, registry):
    scripted.SCRIPT.update(pneumothorax=0.9)  # the "seek urgent medical care now"
    result = analyse(photo, registry, app="scripted_chest")
    assert result.tier == CANT_ASSESS and not result.analysed
    assert "greyscale" in result.quality.failed[0].hint
    anyway = analyse(photo, registry, app="scripted_chest", analyse_anyway=True)
    assert anyway.scores is None and anyway.triage.reasons == ["This does not look like a chest X-ray."]


def test_a_tiny_picture_is_not_analysed_and_says_why(registry):
    result = analyse(Image.new("RGB", (50, 50), (200, 150, 120)), registry)
    assert not result.analysed and result.tier == CANT_ASSESS and "at least 64 pixels" in result.triage.reasons[0]


def test_a_calibrated_bank_gives_calibrated_probabilities(photo, registry):
    scripted.SCRIPT.update(melanoma=0.6, melanocytic_nevus=0.3)
    bank = registry.banks["dermatology"]
    plain = analyse(photo, registry)
    calibrated_registry = dataclasses.replace(registry, banks={**registry.banks, "dermatology": dataclasses.replace(bank, temperature=2.0)})
    result = analyse(photo, calibrated_registry)
    assert result.calibrated and not plain.calibrated
    logits = np.asarray(plain.scores.logits) / 2.0
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(result.scores.probabilities, expected)


def test_demo_mode_scope_gate_cannot_judge(photo, registry):
    grey = degrade.greyscale(photo)
    result = analyse(grey, registry, analyse_anyway=True, demo=True)
    assert result.scope.in_scope is None and "cannot judge" in result.scope.message
    assert result.analysed and result.low_quality  # only the deterministic colour check spoke


def test_the_tiny_model_runs_the_real_path_end_to_end(photo, registry, tiny_model_dir):
    config = {**config_from_environment(), "DEFAULT_PLUGINS": PLUGINS, "PLUGIN_ALLOWLIST": (), "MODEL": tiny_model_dir}
    real = build_registry(make_plugin_manager(config), config)
    classifier = real.classifiers["medsiglip"]
    classifier.load()
    bank = real.banks["dermatology"]
    for template_set in bank.template_sets:
        classifier.prepare(bank, template_set)
    result = analyse_image(photo, real.app("dermatology"), real, explain=True)
    assert result.quality.passed and result.analysed and result.heatmap_png
    assert result.scores.scope_probabilities is not None
    assert len(result.scores.scope_probabilities) == len(bank.scope.prompts)
    assert result.scope.in_scope is None and "cannot judge" in result.scope.message  # random weights
    assert result.triage is not None and result.tier != CANT_ASSESS
    reading = read(result, bank)
    assert reading.triage.tier == result.tier


def document_picture() -> Image.Image:
    """A photo of a printed page: white paper, black lines of text."""
    from PIL import ImageDraw

    page = Image.new("RGB", (900, 1200), (245, 245, 240))
    draw = ImageDraw.Draw(page)
    for line in range(40):
        draw.text((60, 40 + 28 * line), "Patient information leaflet: please read before use. " * 2, fill=(20, 20, 20))
    return page


def test_out_of_scope_pictures_are_refused_by_the_deterministic_checks_and_the_scope_gate(registry):
    # A document: the colour check refuses it before any model runs ...
    result = analyse(document_picture(), registry)
    assert result.tier == CANT_ASSESS and "colour" in [c.name for c in result.quality.failed]
    assert scripted.SEEN == []
    # ... and "Analyse anyway" cannot get past the scope gate.
    anyway = analyse(document_picture(), registry, analyse_anyway=True)
    assert anyway.scores is None and anyway.triage.reasons == ["This does not look like a skin photo."]
    # A colourful scene that passes every quality check is refused by the scope gate alone.
    scripted.IN_SCOPE_MATCH = 0.2  # the scripted model reads it as "a photo of scenery"
    scene = make_lesion_photo(3, 1200, 900, skin_tone="III", position=(0.5, 0.5))[0]
    verdict = analyse(scene, registry)
    assert verdict.quality.passed and verdict.scope.in_scope is False and verdict.scope.score == pytest.approx(0.2)
    assert verdict.tier == CANT_ASSESS and verdict.scores is None
