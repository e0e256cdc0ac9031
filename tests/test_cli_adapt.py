"""``privascan adapt`` and ``privascan eval --adapter`` end to end: tiny random model, real plugins.

The photos' classes differ by colour and shape (tests/synthetic.py
``LESION_KINDS``). The tiny random model cannot name them zero-shot (its text
tower knows nothing), but its image embeddings still carry colour and shape,
so an adapter fitted on some photos must beat zero-shot on held-out ones: the
gain is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from tests.synthetic import make_kind_photo
from webapp import cli
from webapp.adapter import AdapterError, load_adapter, save_adapter
from webapp.evaluation.adapting import split_images
from webapp.evaluation.dataset import DatasetError
from webapp.fingerprint import model_fingerprint

LABELS = {"round_brown": "melanocytic_nevus", "square_red": "cherry_angioma", "triangle_blue": "melanoma"}
MAPS = [f"--map={label}={condition}" for label, condition in LABELS.items()]
PER_LABEL = 14


def write_kinds(folder: Path, per_label: int, kinds=tuple(LABELS), seed: int = 0) -> Path:
    for k, kind in enumerate(kinds):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            make_kind_photo(kind, seed + 1000 * k + n).save(folder / kind / f"{n:02d}.png")
    return folder


@pytest.fixture(scope="module")
def environment(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVASCAN_PLUGINS", "")
        patch.setenv("PRIVASCAN_MODEL", tiny_model_dir)
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name in ("PRIVASCAN_BANK_OVERRIDES", "PRIVASCAN_LESION_WEIGHTS", "PRIVASCAN_CLINICAL_APP", "PRIVASCAN_ADAPTER"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_kinds(tmp_path_factory.mktemp("kinds") / "photos", PER_LABEL)


@pytest.fixture(scope="module")
def fitted(photos, environment, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "clinic.adapter.safetensors"
    code = cli.main(["adapt", str(photos), "--out", str(out), *MAPS, "--quiet", "--seed", "3"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def evaluated(fitted, photos, environment, tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("report")
    code = cli.main(["eval", str(photos), "--out", str(report_dir), *MAPS, "--quiet", "--adapter", str(fitted)])
    assert code == 0
    return {
        "report": json.loads((report_dir / "report.json").read_text()),
        "html": (report_dir / "report.html").read_text(),
    }


def test_adapter_file_holds_weights_and_header_only(fitted, tiny_model_dir):
    with safe_open(str(fitted), framework="numpy") as handle:
        assert set(handle.keys()) == {"weight", "bias"}
        weight = handle.get_tensor("weight")
    assert weight.shape == (3, 32)  # one row per condition: no per-image embedding
    adapter = load_adapter(fitted)
    assert adapter.conditions == ("melanoma", "melanocytic_nevus", "cherry_angioma")  # bank order
    assert adapter.model_fingerprint == model_fingerprint(tiny_model_dir)
    assert adapter.bank == "dermatology" and adapter.bank_hash
    assert adapter.method in ("linear_probe", "prototypes")
    assert set(adapter.header["validation"]) == {"linear_probe", "prototypes", "zero_shot"}
    counts = adapter.header["split"]["images"]
    assert sum(counts["test"].values()) > 0 and sum(counts["train"].values()) > 0
    raw = fitted.read_bytes()
    for name in (f"{n:02d}.png" for n in range(PER_LABEL)):  # no file name anywhere in the file
        assert name.encode() not in raw
    assert b"round_brown" not in raw  # nor the dataset's own labels
    assert len(raw) < 4096
    # nothing else left beside it (the temporary file was renamed into place)
    assert [p.name for p in fitted.parent.iterdir()] == [fitted.name]


def test_adapter_beats_zero_shot_on_held_out_images(evaluated, fitted):
    report = evaluated["report"]
    adapter = load_adapter(fitted)
    arms = {arm["key"]: arm for arm in report["arms"]}
    assert report["settings"]["adapter"]["id"] == adapter.adapter_id
    assert report["settings"]["adapter_split"]["kind"] == "test"
    held_out = sum(adapter.header["split"]["images"]["test"].values())
    assert report["dataset"]["analysed"] == held_out  # only the images the adapter never saw
    zero, adapted = arms["A"]["metrics"], arms["B"]["metrics"]
    print(f"held-out {held_out}: zero-shot balanced accuracy {zero['balanced_accuracy']:.3f}, "
          f"adapter {adapted['balanced_accuracy']:.3f}; macro AUROC {zero['macro_auroc']:.3f} -> {adapted['macro_auroc']:.3f}")
    assert adapted["balanced_accuracy"] >= zero["balanced_accuracy"] + 0.3
    assert adapted["balanced_accuracy"] >= 0.8
    assert adapted["macro_auroc"] > zero["macro_auroc"]
    for cid in LABELS.values():
        row = adapted["per_class"][cid]
        assert row["sensitivity"] is not None and row["specificity"] is not None
    assert adapted["ece"] is not None
    comparison = report["comparison"]
    assert comparison["only_second_correct"] > comparison["only_first_correct"]
    assert 0.0 <= comparison["mcnemar_exact_p"] <= 1.0
    html = evaluated["html"]
    assert adapter.adapter_id in html and "McNemar" in html


def test_eval_without_adapter_says_so(photos, environment, tmp_path):
    code = cli.main(["eval", str(photos), "--out", str(tmp_path / "r"), *MAPS, "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["adapter"] is None
    assert "no adapter" in (tmp_path / "r" / "report.html").read_text()


# ----------------------------------------------------------------- bad input


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_class_with_too_few_images(tmp_path, environment, capsys):
    photos = write_kinds(tmp_path / "photos", 4)
    for extra in sorted((photos / "square_red").iterdir())[1:]:
        extra.unlink()  # one image of cherry_angioma left
    out = tmp_path / "a.safetensors"
    code, err = run_cli(capsys, "adapt", str(photos), "--out", str(out), *MAPS, "--quiet", "--test-split", "0")
    assert code == 2 and "too few images" in err and "cherry_angioma (1)" in err
    assert not out.exists() and list(tmp_path.glob("*.partial")) == []


def test_one_class_only(tmp_path, environment, capsys):
    photos = write_kinds(tmp_path / "photos", 4, kinds=("round_brown",))
    code, err = run_cli(capsys, "adapt", str(photos), "--out", str(tmp_path / "a.st"), "--map=round_brown=melanocytic_nevus", "--quiet")
    assert code == 2 and "one condition only" in err
    assert not (tmp_path / "a.st").exists()


def test_label_not_in_bank(tmp_path, environment, capsys):
    photos = write_kinds(tmp_path / "photos", 3)
    code, err = run_cli(capsys, "adapt", str(photos), "--out", str(tmp_path / "a.st"), "--map=round_brown=not_a_condition",
                        "--map=square_red=cherry_angioma", "--map=triangle_blue=melanoma", "--quiet")
    assert code == 2 and "not_a_condition" in err
    assert not (tmp_path / "a.st").exists()


def test_existing_file_is_not_replaced_without_force(tmp_path, photos, environment, capsys):
    out = tmp_path / "a.st"
    out.write_bytes(b"keep me")
    code, err = run_cli(capsys, "adapt", str(photos), "--out", str(out), *MAPS, "--quiet")
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"


def test_adapter_for_another_model_is_refused(fitted, photos, environment, tmp_path, capsys, tiny_model_dir):
    from plugins.medsiglip.tiny_model import TINY_SHAPES, build_tiny_siglip

    # The same embedding width but one more layer: other weights, so another fingerprint.
    other = build_tiny_siglip(tmp_path / "other-model", seed=1, shapes={**TINY_SHAPES, "num_hidden_layers": 3})
    assert model_fingerprint(str(other)) != model_fingerprint(tiny_model_dir)
    code, err = run_cli(capsys, "eval", str(photos), "--out", str(tmp_path / "r"), *MAPS, "--quiet",
                        "--adapter", str(fitted), "--model", str(other))
    assert code == 2 and "another model" in err
    assert not (tmp_path / "r").exists()


def test_adapter_for_another_bank_is_refused(fitted, photos, environment, tmp_path, capsys):
    adapter = load_adapter(fitted)
    moved = dataclasses.replace(adapter, bank_hash="0123456789abcdef")
    save_adapter(tmp_path / "moved.st", moved)
    code, err = run_cli(capsys, "eval", str(photos), "--out", str(tmp_path / "r"), *MAPS, "--quiet",
                        "--adapter", str(tmp_path / "moved.st"))
    assert code == 2 and "fitted for bank 'dermatology' (hash 0123456789abcdef)" in err


def test_eval_on_another_dataset_needs_unseen(fitted, environment, tmp_path, capsys):
    other = write_kinds(tmp_path / "other", 5, seed=50_000)
    code, err = run_cli(capsys, "eval", str(other), "--out", str(tmp_path / "r"), *MAPS, "--quiet", "--adapter", str(fitted))
    assert code == 2 and "--unseen" in err
    code = cli.main(["eval", str(other), "--out", str(tmp_path / "r"), *MAPS, "--quiet", "--adapter", str(fitted), "--unseen"])
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["dataset"]["analysed"] == 15 and report["settings"]["adapter_split"]["kind"] == "unseen"


def test_damaged_adapter_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        load_adapter(bad)
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter(tmp_path / "missing.safetensors")


def test_split_gives_every_condition_a_place_in_each_part():
    conditions = ["a"] * 3 + ["b"] * 7
    parts = split_images(conditions, 0.3, 0.5, seed=0)
    for condition in "ab":
        chosen = {p for c, p in zip(conditions, parts) if c == condition}
        assert chosen == {"train", "validation", "test"}
    assert list(split_images(conditions, 0.3, 0.5, seed=0)) == list(parts)  # eval finds the same test images
    with pytest.raises(DatasetError, match="too few"):
        split_images(["a", "a", "b", "b", "b"], 0.3, 0.5, seed=0)
    assert np.all(split_images(["a", "a", "b", "b"], 0.0, 0.5, 0) != "test")


def test_a_failed_write_leaves_nothing_behind(fitted, tmp_path, monkeypatch):
    adapter = load_adapter(fitted)

    def refuse(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("webapp.adapter.os.replace", refuse)
    with pytest.raises(OSError):
        save_adapter(tmp_path / "clinic.adapter.safetensors", adapter)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary sibling
