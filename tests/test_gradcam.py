"""MedSigLIPGradCAM on a tiny random SigLIP: one pass gives the scores and the heatmap."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from plugins.medsiglip import MedSigLIPClassifier, MedSigLIPGradCAM
from plugins.medsiglip.gradcam import tokens_to_grid
from plugins.medsiglip.tiny_model import build_tiny_siglip
from tests.helpers import small_bank
from webapp.interfaces import Explainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    loaded = MedSigLIPClassifier(tiny_model_dir, device="cpu")
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def bank():
    return small_bank()


@pytest.fixture(scope="module")
def crop():
    # A dark blob on skin-coloured noise, so the model's features vary across the image.
    rng = np.random.default_rng(3)
    pixels = rng.normal((200, 150, 130), 20, (448, 448, 3))
    yy, xx = np.mgrid[:448, :448]
    pixels[(yy - 200) ** 2 + (xx - 260) ** 2 < 70**2] = (70, 40, 30)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def explainer():
    return MedSigLIPGradCAM()


def test_is_an_explainer(explainer):
    assert isinstance(explainer, Explainer)
    assert explainer.name == "medsiglip-gradcam"


def test_heatmap_is_a_448_map_in_unit_range(classifier, explainer, crop, bank):
    explanation = explainer.explain(classifier, crop, bank, bank.template_set(), "melanoma")
    heatmap = explanation.heatmap
    assert explanation.condition_id == "melanoma"
    assert heatmap.shape == (448, 448) and heatmap.dtype == np.float32
    assert np.all(np.isfinite(heatmap))
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() - heatmap.min() > 0.5 and heatmap.std() > 0.01


def test_heatmaps_differ_between_conditions(classifier, explainer, crop, bank):
    template_set = bank.template_set()
    melanoma = explainer.explain(classifier, crop, bank, template_set, "melanoma").heatmap
    eczema = explainer.explain(classifier, crop, bank, template_set, "eczema").heatmap
    assert np.abs(melanoma - eczema).max() > 1e-3


def test_scores_are_those_of_classify_on_the_same_crop(classifier, explainer, crop, bank):
    template_set = bank.template_set()
    classified = classifier.classify(crop, bank, template_set)
    explanation = explainer.explain(classifier, crop, bank, template_set, None)
    assert explanation.scores.condition_ids == classified.condition_ids
    np.testing.assert_allclose(explanation.scores.logits, classified.logits, atol=1e-5)
    np.testing.assert_allclose(explanation.scores.probabilities, classified.probabilities, atol=1e-6)
    np.testing.assert_allclose(explanation.scores.similarities, classified.similarities, atol=1e-6)
    # None explains that same pass's top condition.
    assert explanation.condition_id == classified.condition_ids[int(np.argmax(classified.logits))]


def test_one_forward_pass_per_explanation(classifier, explainer, crop, bank):
    vision = classifier.model.vision_model
    calls = []
    handle = vision.register_forward_hook(lambda *args: calls.append(1))
    try:
        explainer.explain(classifier, crop, bank, bank.template_set(), None)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_no_parameter_requires_or_keeps_a_gradient_around_an_explanation(classifier, explainer, crop, bank):
    explanation = explainer.explain(classifier, crop, bank, bank.template_set(), "nevus")
    assert explanation.heatmap.max() > 0
    assert not any(p.requires_grad for p in classifier.model.parameters())
    assert all(p.grad is None for p in classifier.model.parameters())


def _last_layer_gradient(classifier, crop, bank, unfreeze_weights: bool):
    """d(a bank logit)/d(the last layer's layer_norm1 output), as Grad-CAM reads it."""
    from plugins.medsiglip.gradcam import gradients_from_the_last_layer

    vision = classifier.model.vision_model
    text = classifier.text_embeddings(bank, bank.template_set())
    kept = {}
    handle = vision.encoder.layers[-1].layer_norm1.register_forward_hook(
        lambda module, args, output: kept.update(activation=output) or output.retain_grad())
    try:
        if unfreeze_weights:  # the textbook way: the last layer and head trainable, so a graph records there
            for module in (vision.encoder.layers[-1], vision.post_layernorm, vision.head):
                module.requires_grad_(True)
            marking = contextlib.nullcontext()
        else:
            marking = gradients_from_the_last_layer(vision)
        with torch.enable_grad(), marking:
            features = vision(pixel_values=classifier.pixel_values(crop)).pooler_output
            logits, _ = classifier.logits_from_image_features(features, text)
            logits[0, 1].backward()
        weight_gradients = sum(p.grad is not None for p in classifier.model.parameters())
        return kept["activation"].grad.clone(), weight_gradients
    finally:
        handle.remove()
        classifier.model.requires_grad_(False)
        classifier.model.zero_grad(set_to_none=True)


def test_the_activation_gradient_is_the_unfrozen_layers_without_any_weight_gradient(classifier, crop, bank):
    ours, ours_weight_gradients = _last_layer_gradient(classifier, crop, bank, unfreeze_weights=False)
    textbook, textbook_weight_gradients = _last_layer_gradient(classifier, crop, bank, unfreeze_weights=True)
    assert torch.allclose(ours, textbook, atol=1e-6) and ours.abs().max() > 0
    assert ours_weight_gradients == 0 and textbook_weight_gradients > 0


def test_explains_after_the_text_tower_is_released(tmp_path_factory, explainer, crop, bank):
    released = MedSigLIPClassifier(str(build_tiny_siglip(tmp_path_factory.mktemp("released"))), device="cpu")
    released.load()
    released.prepare(bank, bank.template_set())
    released.release_text_tower()
    explanation = explainer.explain(released, crop, bank, bank.template_set(), "nevus")
    assert explanation.heatmap.shape == (448, 448)


def test_unknown_condition_is_a_key_error(classifier, explainer, crop, bank):
    with pytest.raises(KeyError):
        explainer.explain(classifier, crop, bank, bank.template_set(), "psoriasis")


def test_tokens_to_grid_keeps_token_order():
    tokens = torch.arange(2 * 1024 * 3, dtype=torch.float32).reshape(2, 1024, 3)
    grid = tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 32, 32)
    assert torch.equal(grid[1, 2, 0, 1], tokens[1, 1, 2]) and torch.equal(grid[0, 0, 1, 0], tokens[0, 32, 0])


def test_with_an_adapter_the_heatmap_explains_the_adapters_logit(classifier, explainer, crop, bank):
    from webapp.adapter import Adapter

    rng = np.random.default_rng(0)
    adapter = Adapter(
        method="linear_probe", conditions=("melanoma", "nevus"),
        weight=rng.normal(size=(2, 32)).astype(np.float32), bias=np.array([0.5, -0.5], dtype=np.float32),
        model_fingerprint="x", bank=bank.name, bank_hash="x", template_set="clinical", fitted_at="2026-12-02T00:00:00Z",
    )
    explanation = explainer.explain(classifier, crop, bank, bank.template_set(), None, adapter=adapter)
    features = classifier.embed_crops([crop]).numpy()
    expected = adapter.logits(features)[0]  # the adapter on the embedding of a plain classification pass
    assert explanation.scores.condition_ids == ["melanoma", "nevus"]
    assert np.allclose(explanation.scores.logits, expected, atol=1e-4)
    assert explanation.condition_id == ["melanoma", "nevus"][int(np.argmax(expected))]
    zero = classifier.classify(crop, bank, bank.template_set())
    assert explanation.zero_shot_scores.condition_ids == zero.condition_ids
    assert np.allclose(explanation.zero_shot_scores.probabilities, zero.probabilities, atol=1e-5)
    assert explanation.heatmap.shape == (448, 448) and explanation.heatmap.std() > 0.01


def test_the_heatmap_is_pytorch_grad_cams_arithmetic(classifier, explainer, crop, bank):
    """grad_cam is written out (pytorch-grad-cam's import costs the server 0.07 GB); the library, run here, agrees."""
    from pytorch_grad_cam import GradCAM

    from plugins.medsiglip.gradcam import RecordLogitsTarget, _bank_head_module, gradients_from_the_last_layer

    ours = explainer.explain(classifier, crop, bank, bank.template_set(), "nevus")
    vision = classifier.model.vision_model
    head = _bank_head_module()(classifier, classifier.text_embeddings(bank, bank.template_set()))
    target = RecordLogitsTarget([c.id for c in bank.conditions].index("nevus"))
    cam = GradCAM(model=head, target_layers=[vision.encoder.layers[-1].layer_norm1], reshape_transform=tokens_to_grid)
    try:
        with torch.enable_grad(), gradients_from_the_last_layer(vision):
            library = cam(input_tensor=classifier.pixel_values(crop), targets=[target])[0]
    finally:
        cam.activations_and_grads.release()
    assert ours.heatmap.shape == library.shape == (448, 448)
    assert np.allclose(ours.heatmap, np.clip(library, 0, 1), atol=1e-4)


def test_the_inference_process_never_imports_pytorch_grad_cam(tiny_model_dir):
    """Explaining a photo in a fresh interpreter loads neither pytorch-grad-cam nor scikit-learn."""
    import subprocess
    import sys

    from tests.helpers import REPO

    code = f"""
import sys
from PIL import Image
from plugins.medsiglip import MedSigLIPClassifier, MedSigLIPGradCAM
from tests.helpers import small_bank
bank = small_bank()
classifier = MedSigLIPClassifier({tiny_model_dir!r}, device="cpu")
classifier.load()
classifier.prepare(bank, bank.template_set())
explanation = MedSigLIPGradCAM().explain(classifier, Image.new("RGB", (448, 448), (180, 120, 100)), bank, bank.template_set(), None)
assert explanation.heatmap.shape == (448, 448)
print(sorted(name for name in ("pytorch_grad_cam", "sklearn", "matplotlib") if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
