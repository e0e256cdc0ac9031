"""The bank embedding cache: hit, miss, stale weights, corrupt entries, a changed bank, and a warm
start that never loads the text tower (tiny random SigLIPs saved and loaded through from_pretrained)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import transformers
from PIL import Image

from plugins.medsiglip import MedSigLIPClassifier
from plugins.medsiglip.tiny_model import build_tiny_siglip
from tests.helpers import small_bank
from webapp.cli import main as cli_main
from webapp.embedding_cache import (
    MAGIC,
    CacheBackend,
    CacheEntryInvalid,
    EmbeddingCache,
    FolderBackend,
    cache_from_config,
    decode_entry,
    default_cache_folder,
    encode_entry,
)


@pytest.fixture(scope="module")
def bank():
    return small_bank()


@pytest.fixture(scope="module")
def crop():
    rng = np.random.default_rng(11)
    return Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> str:
    """Same architecture and tokenizer as the tiny model, other weights (seed 1)."""
    return str(build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip-seed1"), seed=1))


@pytest.fixture
def text_towers_built(monkeypatch):
    """Counts SiglipTextModel constructions (the real constructor still runs)."""
    built = []
    real_init = transformers.SiglipTextModel.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(transformers.SiglipTextModel, "__init__", counting_init)
    return built


def start(model_dir, folder, pairs):
    """What the model manager does at start-up: expect, load, prepare each pair, release."""
    classifier = MedSigLIPClassifier(str(model_dir), device="cpu", embedding_cache=EmbeddingCache(FolderBackend(folder)))
    classifier.expect_banks(pairs)
    classifier.load()
    text_tower_loaded = classifier.model.text_model is not None
    for pair in pairs:
        classifier.prepare(*pair)
    classifier.release_text_tower()
    return classifier, text_tower_loaded


def entries(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".emb"))


def test_miss_computes_and_stores_then_a_warm_start_hits_without_any_text_tower(
    tiny_model_dir, tmp_path, bank, crop, text_towers_built
):
    pair = (bank, bank.template_set("clinical"))
    cold, loaded_text = start(tiny_model_dir, tmp_path, [pair])
    assert not cold.warm_start and loaded_text and len(text_towers_built) == 1
    assert len(entries(tmp_path)) == 1
    expected = cold.classify(crop, *pair)

    warm, loaded_text = start(tiny_model_dir, tmp_path, [pair])
    assert warm.warm_start and not loaded_text
    assert len(text_towers_built) == 1  # the warm start built no text tower at all
    assert type(warm.model).__name__ == "VisionOnlySiglip" and warm.text_tower_released
    vision_parameters = sum(p.numel() for p in warm.model.vision_model.parameters())
    assert sum(p.numel() for p in warm.model.parameters()) == vision_parameters + 2  # + logit scale and bias
    assert warm.logit_scale == pytest.approx(cold.logit_scale) and warm.logit_bias == pytest.approx(cold.logit_bias)
    scores = warm.classify(crop, *pair)
    np.testing.assert_allclose(scores.logits, expected.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores.similarities, expected.similarities, rtol=1e-6, atol=1e-6)
    assert len(entries(tmp_path)) == 1  # nothing rewritten on a hit


def test_warm_start_needs_every_expected_set(tiny_model_dir, tmp_path, bank, text_towers_built):
    clinical, dermoscopy = (bank, bank.template_set("clinical")), (bank, bank.template_set("dermoscopy"))
    start(tiny_model_dir, tmp_path, [clinical])
    both, loaded_text = start(tiny_model_dir, tmp_path, [clinical, dermoscopy])
    assert not both.warm_start and loaded_text  # one set missing: the text tower is needed
    assert len(entries(tmp_path)) == 2
    again, loaded_text = start(tiny_model_dir, tmp_path, [clinical, dermoscopy])
    assert again.warm_start and not loaded_text
    assert len(text_towers_built) == 2


def test_other_weights_miss_and_a_stale_entry_under_their_key_is_rejected(
    tiny_model_dir, other_model_dir, tmp_path, bank, crop
):
    pair = (bank, bank.template_set("clinical"))
    first, _ = start(tiny_model_dir, tmp_path, [pair])
    [first_entry] = entries(tmp_path)
    second, loaded_text = start(other_model_dir, tmp_path, [pair])
    assert not second.warm_start and loaded_text  # another fingerprint: another key, a miss
    [second_entry] = [name for name in entries(tmp_path) if name != first_entry]
    reference = second.classify(crop, *pair)

    # An entry made for the first weights, found under the second weights' key (a copied
    # folder, a renamed file): its identity says whose it is, so it is not used.
    (tmp_path / second_entry).write_bytes((tmp_path / first_entry).read_bytes())
    third, loaded_text = start(other_model_dir, tmp_path, [pair])
    assert not third.warm_start and loaded_text
    np.testing.assert_allclose(third.classify(crop, *pair).logits, reference.logits, rtol=1e-6, atol=1e-6)
    # ... and it was replaced by a valid entry for these weights: the next start is warm.
    fourth, loaded_text = start(other_model_dir, tmp_path, [pair])
    assert fourth.warm_start and not loaded_text


@pytest.mark.parametrize("damage", ["flipped-payload-byte", "truncated", "garbage", "empty", "bad-header"])
def test_a_corrupt_entry_is_detected_recomputed_and_replaced(tiny_model_dir, tmp_path, bank, crop, damage):
    pair = (bank, bank.template_set("clinical"))
    cold, _ = start(tiny_model_dir, tmp_path, [pair])
    expected = cold.classify(crop, *pair).logits
    [name] = entries(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    if damage == "flipped-payload-byte":
        data[-5] ^= 0x40
    elif damage == "truncated":
        data = data[: len(data) - 17]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "empty":
        data = bytearray()
    else:
        header_start = len(MAGIC) + 4
        data[header_start] = ord("[")
    path.write_bytes(bytes(data))

    recomputed, loaded_text = start(tiny_model_dir, tmp_path, [pair])
    assert not recomputed.warm_start and loaded_text
    np.testing.assert_allclose(recomputed.classify(crop, *pair).logits, expected, rtol=1e-6, atol=1e-6)
    warm, loaded_text = start(tiny_model_dir, tmp_path, [pair])
    assert warm.warm_start and not loaded_text


def test_a_changed_bank_misses_and_is_embedded_anew(tiny_model_dir, tmp_path, bank, crop):
    template_set = bank.template_set("clinical")
    start(tiny_model_dir, tmp_path, [(bank, template_set)])
    first = bank.conditions[0]
    edited = dataclasses.replace(
        bank, conditions=(dataclasses.replace(first, descriptions=(*first.descriptions, "a new wording")), *bank.conditions[1:])
    )
    changed, loaded_text = start(tiny_model_dir, tmp_path, [(edited, template_set)])
    assert not changed.warm_start and loaded_text
    assert len(entries(tmp_path)) == 2
    original, _ = start(tiny_model_dir, tmp_path, [(bank, template_set)])
    assert original.warm_start  # the original bank's entry is still valid
    assert not np.allclose(
        changed.text_embeddings(edited, template_set).numpy(), original.text_embeddings(bank, template_set).numpy()
    )
    # A template set with other templates is another set too.
    retemplated = dataclasses.replace(template_set, templates=("A photo of {}.",))
    other = dataclasses.replace(bank, template_sets=(retemplated,))
    again, loaded_text = start(tiny_model_dir, tmp_path, [(other, retemplated)])
    assert not again.warm_start and loaded_text


def test_entries_round_trip_and_name_what_is_wrong():
    identity = {"weights": "local:abc", "recipe": "r", "conditions": [["a", ["x"]], ["b", ["y"]]]}
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = encode_entry(identity, ("a", "b"), vectors, logit_scale=2.302585, logit_bias=-10.0)
    entry = decode_entry(data, identity)
    np.testing.assert_array_equal(entry.vectors, vectors)
    assert entry.rows == ("a", "b") and entry.logit_scale == float(np.float32(2.302585)) and entry.logit_bias == -10.0
    with pytest.raises(CacheEntryInvalid, match="stale"):
        decode_entry(data, {**identity, "weights": "local:other"})
    with pytest.raises(CacheEntryInvalid, match="checksum"):
        decode_entry(data[:-1] + bytes([data[-1] ^ 1]), identity)
    with pytest.raises(CacheEntryInvalid, match="truncated"):
        decode_entry(data[:-4], identity)
    not_unit = encode_entry(identity, ("a", "b"), vectors * 3, logit_scale=1.0, logit_bias=0.0)
    with pytest.raises(CacheEntryInvalid, match="unit-norm"):
        decode_entry(not_unit, identity)


def test_folder_backend_writes_atomically_and_a_read_only_folder_does_not_stop_start_up(
    tiny_model_dir, tmp_path, bank, crop
):
    backend = FolderBackend(tmp_path / "made-on-first-put")
    assert isinstance(backend, CacheBackend)
    assert backend.get("bank-abc") is None
    backend.put("bank-abc", b"one")
    backend.put("bank-abc", b"two")
    assert backend.get("bank-abc") == b"two"
    assert os.listdir(tmp_path / "made-on-first-put") == ["bank-abc.emb"]  # no temp file left behind
    with pytest.raises(ValueError):
        backend.put("../escape", b"x")

    # A cache "folder" that cannot be written (here a file in its place, which stops root too).
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("occupied")
    pair = (bank, bank.template_set("clinical"))
    classifier, _ = start(tiny_model_dir, blocked, [pair])  # warns, keeps going
    assert classifier.classify(crop, *pair).probabilities.sum() == pytest.approx(1.0)
    assert blocked.read_text() == "occupied"


def test_the_setting_moves_or_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_folder() == tmp_path / "xdg" / "privascan" / "embeddings"
    assert cache_from_config({}).backend.folder == tmp_path / "xdg" / "privascan" / "embeddings"
    assert cache_from_config({"CACHE_DIR": str(tmp_path / "elsewhere")}).backend.folder == tmp_path / "elsewhere"
    assert cache_from_config({"CACHE_DIR": "off"}) is None
    monkeypatch.setenv("PRIVASCAN_CACHE_DIR", str(tmp_path / "from-env"))
    from webapp.config import config_from_environment

    assert config_from_environment()["CACHE_DIR"] == str(tmp_path / "from-env")


def test_the_app_starts_warm_after_a_first_start(app_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVASCAN_CACHE_DIR", str(tmp_path))
    first = app_factory()
    classifier = first.extensions["privascan_registry"].classifiers["medsiglip"]
    assert first.extensions["privascan_models"].status("medsiglip").ready and not classifier.warm_start
    stored = entries(tmp_path)
    assert stored  # every bank and picture kind (and scope prompts) the app serves
    second = app_factory()
    classifier = second.extensions["privascan_registry"].classifiers["medsiglip"]
    assert second.extensions["privascan_models"].status("medsiglip").ready and classifier.warm_start
    assert entries(tmp_path) == stored


def test_privascan_prepare_fills_the_cache_ahead_of_time(tiny_model_dir, tmp_path, monkeypatch, capsys, app_factory):
    monkeypatch.setenv("PRIVASCAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PRIVASCAN_MODEL", tiny_model_dir)
    monkeypatch.setenv("PRIVASCAN_PLUGINS", "")
    assert cli_main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert "medsiglip: stored" in out and str(tmp_path) in out
    assert entries(tmp_path)
    assert cli_main(["prepare"]) == 0
    assert "already in the cache" in capsys.readouterr().out
    app = app_factory()  # the same settings: its first start is already warm
    assert app.extensions["privascan_registry"].classifiers["medsiglip"].warm_start

    monkeypatch.setenv("PRIVASCAN_CACHE_DIR", "off")
    assert cli_main(["prepare"]) == 2
    assert "no embedding cache" in capsys.readouterr().err
