"""webapp.pipeline with a deterministic test plugin (tests/plugins/colour_plugin.py): fast, no model."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from tests.plugins import colour_plugin
from webapp.pipeline import analyse_frame, analyse_image, read, resolve_template_set
from webapp.plugins import build_registry, make_plugin_manager

CONFIG = {"DEFAULT_PLUGINS": ("tests.plugins.colour_plugin",), "PLUGIN_ALLOWLIST": (), "CLINICAL_APP": "colour"}


@pytest.fixture
def registry():
    return build_registry(make_plugin_manager(dict(CONFIG)), CONFIG)


def spot_photo(colour=(200, 30, 30), size=(400, 300)) -> Image.Image:
    image = Image.new("RGB", size, (220, 200, 190))
    ImageDraw.Draw(image).ellipse((170, 120, 230, 180), fill=colour)
    return image


def test_a_located_spot_is_cropped_to_the_classifiers_input_size_and_scored(registry):
    clinical_app = registry.app("colour")
    result = analyse_image(spot_photo(), clinical_app, registry, explain=False)
    assert result.analysed and result.detector_name == "darkest" and not result.nothing_located
    assert registry.classifiers["redness"].seen_sizes == [(64, 64)]  # the classifier's size, not 448
    box = result.detection.box
    assert box.x0 < 230 and box.x1 > 170 and box.y0 < 180 and box.y1 > 120  # on the spot (170-230, 120-180)
    assert result.scores.condition_ids == ["red", "other"]
    assert result.scores.probabilities[0] > 0.5  # a red spot reads as red
    assert {"localize", "crop", "classify", "encode"} <= set(result.timings)
    assert result.crop_jpeg[:2] == b"\xff\xd8"


def test_nothing_located_is_recorded_and_never_reads_as_confident(registry):
    # A uniform picture also fails the sharpness check; analysed anyway, it still must not read as confident.
    result = analyse_image(Image.new("RGB", (300, 300), (200, 30, 30)), registry.app("colour"), registry,
                           explain=False, analyse_anyway=True)
    assert result.analysed and result.detection is None and result.nothing_located
    reading = read(result, registry.banks["colour"])
    assert reading.confidence == registry.banks["colour"].rules.fallback_confidence


def test_a_too_small_photo_is_not_analysed_and_no_detector_runs(registry):
    result = analyse_image(spot_photo(size=(40, 30)), registry.app("colour"), registry, explain=False)
    assert not result.analysed and result.detector_name is None and not result.nothing_located
    assert "only 40x30 pixels" in result.notes[0]


def test_live_frames_say_what_was_in_view(registry):
    clinical_app = registry.app("colour")
    finding = analyse_frame(spot_photo(), None, clinical_app, registry)
    assert finding.view == "finding" and set(finding.probabilities) == {"red", "other"} and finding.crop_jpeg
    nothing = analyse_frame(Image.new("RGB", (300, 300), (90, 90, 90)), None, clinical_app, registry)
    assert nothing.view == "nothing" and nothing.probabilities is None and nothing.crop_jpeg == b""
    tiny = analyse_frame(spot_photo(size=(40, 30)), None, clinical_app, registry)
    assert tiny.view == "too-small" and tiny.probabilities is None


def test_template_sets_resolve_to_the_banks_own(registry):
    bank = registry.banks["colour"]
    assert resolve_template_set(bank, "second").id == "second"
    assert resolve_template_set(bank, None).id == "plain"
    assert resolve_template_set(bank, "dermoscopy").id == "plain"  # a choice made under another modality
    result = analyse_image(spot_photo(), registry.app("colour"), registry, template_set_id="second", explain=False)
    assert result.template_set_id == "second"
