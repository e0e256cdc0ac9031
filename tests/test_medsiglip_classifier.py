"""MedSigLIPClassifier on a tiny random SigLIP loaded through the real from_pretrained path."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from plugins.medsiglip import MedSigLIPClassifier, register_classifiers, register_explainers
from plugins.medsiglip.classifier import TextTowerReleased, load_failure
from tests.helpers import small_bank
from webapp.cropping import pad_to_square
from webapp.interfaces import Classifier, Condition, ModelUnavailable, PromptBank, TemplateSet


@pytest.fixture(scope="module")
def bank():
    return small_bank()


@pytest.fixture
def classifier(tiny_model_dir):
    loaded = MedSigLIPClassifier(str(tiny_model_dir), device="cpu")
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def crop():
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8), "RGB")


def count_calls(module):
    """Wrap a module's real forward so calls are counted (the real forward still runs)."""
    calls = []
    real_forward = module.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    module.forward = counting_forward
    return calls


def test_loads_through_from_pretrained(classifier, tiny_model_dir):
    assert isinstance(classifier, Classifier)
    assert type(classifier.model).__name__ == "SiglipModel"
    assert type(classifier.processor.tokenizer).__name__ == "SiglipTokenizer"
    description = classifier.describe()
    assert "local copy" in description and str(tiny_model_dir) not in description  # no server paths shown
    assert description.endswith("on cpu")


def test_local_folder_loads_without_network(tiny_model_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used to load a local folder")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    local = MedSigLIPClassifier(str(tiny_model_dir), device="cpu")
    local.load()
    assert local.is_loaded


def test_construction_is_cheap_and_hooks_return_plugin_objects(tiny_model_dir):
    (classifier,) = register_classifiers({"MODEL": str(tiny_model_dir), "HF_TOKEN": "hf_x"})
    assert isinstance(classifier, MedSigLIPClassifier)
    assert not classifier.is_loaded and classifier.token == "hf_x"
    assert "not loaded" in classifier.describe()
    (explainer,) = register_explainers({})
    assert explainer.name == "medsiglip-gradcam"
    with pytest.raises(ModelUnavailable):
        classifier.classify(Image.new("RGB", (448, 448)), None, None)


def test_scores_shapes_and_probabilities(classifier, bank, crop):
    scores = classifier.classify(crop, bank, bank.template_set("clinical"))
    assert scores.condition_ids == ["melanoma", "nevus", "seb_k", "eczema"]
    for values in (scores.logits, scores.probabilities, scores.similarities):
        assert values.shape == (4,) and np.all(np.isfinite(values))
    assert scores.probabilities.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(np.abs(scores.similarities) <= 1.0 + 1e-6)
    assert np.argmax(scores.probabilities) == np.argmax(scores.logits)


def test_logits_equal_direct_ensembled_computation(classifier, bank, crop):
    template_set = bank.template_set("clinical")
    scores = classifier.classify(crop, bank, template_set)

    model, processor = classifier.model, classifier.processor
    with torch.no_grad():
        class_embeddings = []
        for condition in bank.conditions:
            prompts = [t.format(d) for t in template_set.templates for d in condition.descriptions]
            ids = processor.tokenizer(prompts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
            text = F.normalize(model.get_text_features(input_ids=ids["input_ids"]).pooler_output, dim=-1)
            class_embeddings.append(F.normalize(text.mean(0), dim=-1))
        text = torch.stack(class_embeddings)
        pixels = processor(images=crop, return_tensors="pt")["pixel_values"]
        image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        cos = (image @ text.T)[0]
        logits = model.logit_scale.exp() * cos + model.logit_bias

    np.testing.assert_allclose(scores.similarities, cos.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores.logits, logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores.probabilities, torch.softmax(logits.double(), -1).numpy(), atol=1e-6)


def test_single_prompt_logits_equal_siglip_forward(classifier, crop):
    """With one prompt per class the result must be SiglipModel's own logits_per_image."""
    bank = PromptBank(
        name="single",
        title="Single",
        conditions=(
            Condition("a", "A", ("benign",), ("a brown mole",)),
            Condition("b", "B", ("malignant",), ("a bleeding nodule",)),
        ),
        template_sets=(TemplateSet("plain", "Plain", ("a photo of {}.",)),),
    )
    scores = classifier.classify(crop, bank, bank.template_set())
    inputs = classifier.processor(
        text=["a photo of a brown mole.", "a photo of a bleeding nodule."],
        images=crop,
        padding="max_length",
        max_length=64,
        return_tensors="pt",
    )
    with torch.no_grad():
        reference = classifier.model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    np.testing.assert_allclose(scores.logits, reference.logits_per_image[0].numpy(), atol=1e-4)


def test_pixel_values_are_the_448_crop_in_minus_one_to_one(classifier, crop):
    pixels = classifier.pixel_values(crop)
    assert pixels.shape == (1, 3, 448, 448) and pixels.dtype == torch.float32
    expected = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(pixels[0], expected, atol=1e-5, rtol=0)


def test_non_square_crop_is_refused_rather_than_stretched(classifier):
    # The core pads crops to squares (webapp.cropping); the processor would
    # stretch a 448x224 band to 448x448, doubling every height in it.
    wide = Image.new("RGB", (448, 224), (255, 255, 255))
    with pytest.raises(ValueError, match="square crops; got 448x224"):
        classifier.pixel_values(wide)


def test_a_padded_crop_keeps_its_shape(classifier):
    wide = Image.new("RGB", (448, 224), (255, 255, 255))
    wide.paste((0, 0, 0), (0, 100, 448, 124))  # a black stripe across the middle of the band
    pixels = classifier.pixel_values(pad_to_square(wide))[0]
    assert pixels.shape == (3, 448, 448)
    # Padded (112 rows above and below), never stretched: the stripe stays 24 rows
    # thick, 112 rows lower; a stretched image would have made it 48 rows thick.
    stripe_rows = torch.nonzero(pixels[0, :, 224] < 0).flatten()
    assert stripe_rows.min() == 212 and stripe_rows.max() == 235
    # The padding continues the picture's edge colour.
    assert torch.all(pixels[:, :100, :] > 0.8)


def test_text_tower_runs_once_per_bank_and_template_set(classifier, bank, crop):
    calls = count_calls(classifier.model.text_model)
    clinical, dermoscopy = bank.template_set("clinical"), bank.template_set("dermoscopy")
    classifier.prepare(bank, clinical)
    assert len(calls) == 1
    first = classifier.classify(crop, bank, clinical)
    for _ in range(3):
        again = classifier.classify(crop, bank, clinical)
    classifier.prepare(bank, clinical)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.logits, again.logits)
    classifier.classify(crop, bank, dermoscopy)
    assert len(calls) == 2
    assert classifier.text_embeddings(bank, dermoscopy).shape == (4, classifier.model.config.vision_config.hidden_size)


def test_release_text_tower_keeps_prepared_banks(classifier, bank, crop):
    clinical = bank.template_set("clinical")
    classifier.prepare(bank, clinical)
    before = classifier.classify(crop, bank, clinical)
    parameters_before = sum(p.numel() for p in classifier.model.parameters())

    classifier.release_text_tower()

    assert classifier.model.text_model is None and classifier.text_tower_released
    assert sum(p.numel() for p in classifier.model.parameters()) < parameters_before
    after = classifier.classify(crop, bank, clinical)
    np.testing.assert_allclose(after.logits, before.logits)
    with pytest.raises(TextTowerReleased) as raised:
        classifier.classify(crop, bank, bank.template_set("dermoscopy"))
    assert isinstance(raised.value, ModelUnavailable)
    assert "test-derm" in raised.value.reason and "dermoscopy" in raised.value.reason
    classifier.release_text_tower()  # releasing twice is harmless


def test_batch_matches_single(classifier, bank, crop):
    other = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    template_set = bank.template_set()
    batch = classifier.classify_batch([crop, other], bank, template_set)
    np.testing.assert_allclose(batch[0].logits, classifier.classify(crop, bank, template_set).logits, atol=1e-5)
    np.testing.assert_allclose(batch[1].logits, classifier.classify(other, bank, template_set).logits, atol=1e-5)
    assert classifier.classify_batch([], bank, template_set) == []


def test_missing_local_path_is_explained(tmp_path):
    with pytest.raises(ModelUnavailable) as raised:
        MedSigLIPClassifier(str(tmp_path / "models" / "medsiglip-448")).load()
    assert "does not exist" in raised.value.reason and "MODEL" in raised.value.advice


def test_folder_without_a_model_is_explained(tmp_path):
    with pytest.raises(ModelUnavailable) as raised:
        MedSigLIPClassifier(str(tmp_path)).load()
    assert "config.json" in raised.value.reason


def test_a_model_that_is_not_siglip_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailable) as raised:
        MedSigLIPClassifier(str(tmp_path)).load()
    assert "not SigLIP" in raised.value.reason and "'bert'" in raised.value.reason


def copy_of(tiny_model_dir: str, destination: Path) -> Path:
    import shutil

    shutil.copytree(tiny_model_dir, destination)
    return destination


def test_a_folder_with_only_pickled_weights_is_refused_without_unpickling(tiny_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    folder = copy_of(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(torch, "load", no_unpickling)
    classifier = MedSigLIPClassifier(str(folder))
    with pytest.raises(ModelUnavailable) as raised:
        classifier.load()
    assert "only pickled weights (pytorch_model.bin)" in raised.value.reason
    assert "safetensors only" in raised.value.reason and "model.safetensors" in raised.value.advice
    assert not classifier.is_loaded


def test_transformers_refusal_of_pickled_weights_is_explained():
    # What transformers says when use_safetensors=True finds no safetensors file (e.g. a hub repo).
    exc = OSError("Error no file named model.safetensors found in directory /models/x.")
    reason = load_failure(exc, "/models/x", offline=True, have_token=False)
    assert "no safetensors weights" in reason.reason and "pickled" in reason.reason


def test_a_models_own_code_never_runs(tiny_model_dir, tmp_path):
    """A folder whose config asks for its own Python classes (auto_map): transformers' stock SigLIP is used."""
    import json

    folder = copy_of(tiny_model_dir, tmp_path / "remote-code")
    marker = tmp_path / "the-models-code-ran"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import SiglipConfig, SiglipModel\n"
        "class EvilConfig(SiglipConfig):\n    pass\n"
        "class EvilModel(SiglipModel):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    classifier = MedSigLIPClassifier(str(folder))
    try:
        classifier.load()
    except ModelUnavailable:
        pass  # refusing is as good as ignoring the code
    assert not marker.exists()
    if classifier.is_loaded:
        assert type(classifier.model).__module__.startswith("transformers.")


def test_the_loader_refuses_pickled_weights(tiny_model_dir, tmp_path):
    """Only safetensors are loaded: the same weights as a pickle (pytorch_model.bin) are refused, never unpickled."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    classifier = MedSigLIPClassifier(str(folder))
    with pytest.raises(ModelUnavailable):
        classifier.load()
    assert not classifier.is_loaded


def test_offline_hub_id_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was contacted in offline mode")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as raised:
        MedSigLIPClassifier("privascan-tests/never-downloaded").load()
    assert time.perf_counter() - started < 10
    assert "HF_HUB_OFFLINE" in raised.value.reason and "not in the local" in raised.value.reason
    assert "MODEL" in raised.value.advice


def test_without_a_token_the_default_hub_id_is_only_looked_up_in_the_cache(monkeypatch, tmp_path):
    """Rule 4: no model download unless the operator configured access (HF_TOKEN)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache, and no saved login token

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was contacted although no token is configured")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelUnavailable) as raised:
        MedSigLIPClassifier("google/medsiglip-448").load()
    assert "did not contact the hub" in raised.value.reason
    assert "HF_TOKEN" in raised.value.advice and "PRIVASCAN_DEMO_MODEL" in raised.value.advice


def _gated_error():
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/google/medsiglip-448/resolve/main/config.json"
    response = httpx2.Response(401, request=httpx2.Request("GET", url))
    try:
        try:
            raise GatedRepoError("401 Client Error: access to this model is restricted", response=response)
        except GatedRepoError as cause:
            raise OSError("You are trying to access a gated repo.") from cause
    except OSError as error:
        return error


def test_gated_repository_reasons_name_the_terms_and_the_token():
    without_token = load_failure(_gated_error(), "google/medsiglip-448", offline=False, have_token=False)
    assert "gated" in without_token.reason and "no Hugging Face token" in without_token.reason
    assert "HAI-DEF" in without_token.advice and "HF_TOKEN" in without_token.advice
    with_token = load_failure(_gated_error(), "google/medsiglip-448", offline=False, have_token=True)
    assert "no access" in with_token.reason and "accept the HAI-DEF terms" in with_token.advice


def test_int8_mode_classifies_close_to_fp32(tiny_model_dir, bank, crop):
    template_set = bank.template_set("clinical")
    exact = MedSigLIPClassifier(tiny_model_dir, device="cpu")
    fast = MedSigLIPClassifier(tiny_model_dir, device="cpu", int8=True)
    for classifier in (exact, fast):
        classifier.load()
        classifier.prepare(bank, template_set)
        classifier.release_text_tower()
    reference, quick = exact.classify(crop, bank, template_set), fast.classify(crop, bank, template_set)
    cosine = float(np.dot(reference.embedding, quick.embedding))  # unit-norm image embeddings
    assert cosine > 0.99
    assert not np.array_equal(reference.logits, quick.logits)  # the quantized tower really ran
    assert ", int8" in fast.describe() and "int8" not in exact.describe()
