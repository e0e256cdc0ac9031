"""``privascan eval`` end to end: tiny random model, synthetic labelled photos made here, real plugins.

The model's weights are random, so its accuracy means nothing; what is checked
is that every number in the report is the one its definition gives on the
per-image results (recomputed here by brute force, independently of
webapp.evaluation.metrics), that arm B really is the other template set
scored on the same crop, that the fitted threshold is the one the rule picks,
that the app then loads it, and that nothing is written outside --out.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from plugins.medsiglip.classifier import MedSigLIPClassifier
from tests.helpers import make_app
from tests.synthetic import SKIN_TONES, make_lesion_photo
from webapp import cli

LABELS = {"mel": "melanoma", "nv": "melanocytic_nevus", "bkl": "seborrheic_keratosis"}
PER_LABEL = 4
TONES = list(SKIN_TONES)[:3]
MAPS = [f"--map={label}={condition}" for label, condition in LABELS.items()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """DATASET/<label>/<n>.jpg (plus one unreadable file) and a CSV of the same photos with a skin-tone column."""
    root = tmp_path_factory.mktemp("dataset")
    folder = root / "photos"
    rows = []
    for index, label in enumerate(LABELS):
        (folder / label).mkdir(parents=True)
        for n in range(PER_LABEL):
            tone = TONES[n % len(TONES)]
            image, _ = make_lesion_photo(100 * index + n, width=160, height=120, skin_tone=tone)
            image.save(folder / label / f"{n}.jpg", quality=90)
            rows.append([f"photos/{label}/{n}.jpg", label, tone])
    (folder / "bkl" / "broken.jpg").write_bytes(b"this is not a JPEG")
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fitzpatrick"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def environment(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVASCAN_PLUGINS", "")  # no third-party plugin
        patch.setenv("PRIVASCAN_MODEL", tiny_model_dir)
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name in ("PRIVASCAN_BANK_OVERRIDES", "PRIVASCAN_LESION_WEIGHTS", "PRIVASCAN_CLINICAL_APP"):
            patch.delenv(name, raising=False)
        yield


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


@pytest.fixture(scope="module")
def compared(dataset, environment, tmp_path_factory):
    """One run: folder dataset, arm B = dermoscopy templates, melanoma threshold fitted; vision passes counted."""
    out = tmp_path_factory.mktemp("compared") / "report"
    overrides = out.parent / "clinic-thresholds.toml"
    calls = []
    real = MedSigLIPClassifier.embed_crops

    def counting(self, crops):
        calls.append(len(crops))
        return real(self, crops)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MedSigLIPClassifier, "embed_crops", counting)
        code = cli.main([
            "eval", str(dataset / "photos"), "--out", str(out), *MAPS, "--quiet",
            "--template-set", "clinical", "--compare-template-set", "dermoscopy",
            "--fit-thresholds", "melanoma=0.75", "--validation-split", "0.5", "--seed", "0",
            "--overrides-out", str(overrides),
        ])
    assert code == 0
    return {
        "out": out,
        "overrides": overrides,
        "report": json.loads((out / "report.json").read_text()),
        "html": (out / "report.html").read_text(),
        "vision_calls": calls,
    }


def analysed_images(report):
    return [image for image in report["images"] if image["analysed"]]


def pairwise_auroc(scores, positive):
    """Brute force over every (positive, negative) pair, ties counting one half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return None
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def test_counts_and_skipped_files(compared):
    report = compared["report"]
    data = report["dataset"]
    assert data["kind"] == "folder" and data["images"] == 3 * PER_LABEL + 1
    assert data["analysed"] == 3 * PER_LABEL
    assert data["skipped"] == [{"path": "bkl/broken.jpg", "reason": data["skipped"][0]["reason"]}]
    assert "not a photo we can read" in data["skipped"][0]["reason"]
    assert data["labels"] == {
        "bkl": {"condition": "seborrheic_keratosis", "images": PER_LABEL + 1},
        "mel": {"condition": "melanoma", "images": PER_LABEL},
        "nv": {"condition": "melanocytic_nevus", "images": PER_LABEL},
    }
    assert [arm["template_set"] for arm in report["arms"]] == ["clinical", "dermoscopy"]


def test_one_vision_pass_per_image_serves_both_arms(compared):
    assert compared["vision_calls"] == [1] * (3 * PER_LABEL)  # the broken file never reaches the model
    assert compared["report"]["settings"]["embeddings_reused"] is True


@pytest.mark.parametrize("arm_index", [0, 1])
def test_every_figure_matches_its_definition_on_the_per_image_results(compared, arm_index):
    report = compared["report"]
    arm = report["arms"][arm_index]
    key, m = arm["key"], arm["metrics"]
    images = analysed_images(report)
    classes = list(LABELS.values())
    true = [image["condition"] for image in images]
    predicted = [image["arms"][key]["predicted"] for image in images]

    # Confusion matrix: rows sum to the label counts, cells match the predictions.
    cm = m["confusion_matrix"]
    assert cm["true"] == ["melanoma", "melanocytic_nevus", "seborrheic_keratosis"]  # bank order
    assert cm["predicted"] == cm["true"] + ["(other)"]
    assert [sum(row) for row in cm["counts"]] == [PER_LABEL] * 3
    assert sum(map(sum, cm["counts"])) == m["n"] == len(images)
    for i, t in enumerate(cm["true"]):
        for j, p in enumerate(cm["predicted"]):
            expected = sum(1 for a, b in zip(true, predicted) if a == t and (b == p or (p == "(other)" and b not in classes)))
            assert cm["counts"][i][j] == expected

    # Sensitivity, specificity, balanced accuracy and accuracy from the same lists.
    for condition in classes:
        row = m["per_class"][condition]
        positives = [b for a, b in zip(true, predicted) if a == condition]
        negatives = [b for a, b in zip(true, predicted) if a != condition]
        assert row["n"] == PER_LABEL
        assert row["sensitivity"] == pytest.approx(sum(b == condition for b in positives) / len(positives))
        assert row["specificity"] == pytest.approx(sum(b != condition for b in negatives) / len(negatives))
        assert 0 <= row["sensitivity_ci95"][0] <= row["sensitivity"] <= row["sensitivity_ci95"][1] <= 1
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m["per_class"][c]["sensitivity"] for c in classes]))
    assert m["accuracy"] == pytest.approx(sum(a == b for a, b in zip(true, predicted)) / len(images))

    # AUROCs by brute force over pairs.
    aurocs = {}
    for condition in classes:
        scores = [image["arms"][key]["probabilities"][condition] for image in images]
        aurocs[condition] = pairwise_auroc(scores, [t == condition for t in true])
        assert m["per_class"][condition]["auroc"] == pytest.approx(aurocs[condition])
    assert m["melanoma_vs_rest_auroc"] == pytest.approx(aurocs["melanoma"])
    assert m["macro_auroc"] == pytest.approx(np.mean(list(aurocs.values())))
    high = [image["arms"][key]["high_risk_probability"] for image in images]
    assert m["high_risk_vs_rest_auroc"] == pytest.approx(pairwise_auroc(high, [t == "melanoma" for t in true]))

    # ECE: ten bins (i/10, (i+1)/10], weighted |accuracy - confidence|.
    bins: dict[int, list] = {}
    for image, a, b in zip(images, true, predicted):
        confidence = image["arms"][key]["confidence"]
        bins.setdefault(max(0, math.ceil(confidence * 10) - 1), []).append((a == b, confidence))
    ece = sum(len(v) / len(images) * abs(np.mean([c for c, _ in v]) - np.mean([p for _, p in v])) for v in bins.values())
    assert m["ece"] == pytest.approx(ece)
    assert sum(b["count"] for b in m["reliability"]) == len(images) and len(m["reliability"]) == 10

    for name in ("accuracy", "balanced_accuracy", "melanoma_vs_rest_auroc", "macro_auroc", "ece"):
        assert 0.0 <= m[name] <= 1.0


def test_predictions_are_the_apps_headline_over_the_whole_bank(compared):
    for image in analysed_images(compared["report"]):
        entry = image["arms"]["A"]
        # The mapped conditions' probabilities are part of a softmax over the whole bank.
        assert sum(entry["probabilities"].values()) < 1.0
        if entry["predicted"] in entry["probabilities"]:
            assert entry["confidence"] == entry["probabilities"][entry["predicted"]]
        assert entry["confidence"] >= max(entry["probabilities"].values())


def test_arm_b_is_the_other_template_set_on_the_same_crop(compared, dataset, tiny_model_dir):
    """Redo one image by hand: localize, crop, classify with the dermoscopy templates (a fresh vision pass)."""
    from plugins.dermatology.localizer import ClassicalLesionLocalizer
    from webapp.cropping import square_crop
    from webapp.images import safe_decode
    from webapp.prompt_bank import load_prompt_bank

    bank = load_prompt_bank(Path(cli.__file__).resolve().parents[1] / "prompts" / "dermatology.toml")
    classifier = MedSigLIPClassifier(tiny_model_dir, device="cpu")
    classifier.load()
    image_record = next(i for i in analysed_images(compared["report"]) if i["path"] == "mel/0.jpg")
    image = safe_decode((dataset / "photos" / "mel" / "0.jpg").read_bytes(), 50_000_000).image
    detection = ClassicalLesionLocalizer().locate(image)
    assert (detection.box.as_list() if detection else None) == image_record["box"]
    crop, _ = square_crop(image, detection.box if detection else None, size=classifier.input_size)
    for key, template_set in (("A", "clinical"), ("B", "dermoscopy")):
        scores = classifier.classify(crop, bank, bank.template_set(template_set))
        direct = dict(zip(scores.condition_ids, scores.probabilities))
        for condition, probability in image_record["arms"][key]["probabilities"].items():
            assert probability == pytest.approx(direct[condition], rel=1e-5)
    a = image_record["arms"]["A"]["probabilities"]
    b = image_record["arms"]["B"]["probabilities"]
    assert a != b  # different prompts, different numbers


def test_comparison_counts_are_paired(compared):
    report = compared["report"]
    comparison = report["comparison"]
    images = analysed_images(report)
    right = {key: [i["arms"][key]["predicted"] == i["condition"] for i in images] for key in ("A", "B")}
    assert comparison["only_first_correct"] == sum(a and not b for a, b in zip(right["A"], right["B"]))
    assert comparison["only_second_correct"] == sum(b and not a for a, b in zip(right["A"], right["B"]))
    assert sum(comparison[k] for k in ("both_correct", "only_first_correct", "only_second_correct", "both_wrong")) == len(images)
    assert 0.0 <= comparison["mcnemar_exact_p"] <= 1.0


def test_fitted_threshold_is_the_rule_applied_to_the_validation_split(compared):
    report = compared["report"]
    images = analysed_images(report)
    fitted = report["thresholds"]["conditions"]["melanoma"]
    validation = [i for i in images if i["split"] == "validation"]
    held_out = [i for i in images if i["split"] == "held_out"]
    assert len(validation) + len(held_out) == len(images)
    for label_condition in LABELS.values():  # stratified: half of each label on each side
        assert sum(i["condition"] == label_condition for i in validation) == PER_LABEL // 2
    positives = sorted((i["arms"]["A"]["probabilities"]["melanoma"] for i in validation if i["condition"] == "melanoma"), reverse=True)
    needed = math.ceil(0.75 * len(positives))  # 2 validation melanomas: both
    expected = math.floor(positives[needed - 1] * 1e6) / 1e6
    assert fitted["threshold"] == expected

    def rates(group, threshold):
        pos = [i["arms"]["A"]["probabilities"]["melanoma"] >= threshold for i in group if i["condition"] == "melanoma"]
        neg = [i["arms"]["A"]["probabilities"]["melanoma"] < threshold for i in group if i["condition"] != "melanoma"]
        return sum(pos) / len(pos), sum(neg) / len(neg)

    assert (fitted["validation"]["sensitivity"], fitted["validation"]["specificity"]) == pytest.approx(rates(validation, expected))
    assert fitted["validation"]["sensitivity"] >= 0.75
    assert (fitted["held_out"]["sensitivity"], fitted["held_out"]["specificity"]) == pytest.approx(rates(held_out, expected))
    assert fitted["current_threshold"] == 0.25  # the shipped melanoma threshold

    text = compared["overrides"].read_text()
    assert tomllib.loads(text) == {"bank": "dermatology", "thresholds": {"melanoma": expected}}
    assert "held-out" in text and "PRIVASCAN_BANK_OVERRIDES" in text


def test_the_app_carries_the_fitted_threshold(compared, app_factory, monkeypatch):
    monkeypatch.setenv("PRIVASCAN_BANK_OVERRIDES", str(compared["overrides"]))
    app = app_factory(LOAD_MODELS_AT_START=False)
    bank = app.extensions["privascan_registry"].banks["dermatology"]
    assert bank.condition("melanoma").alert_threshold == compared["report"]["thresholds"]["conditions"]["melanoma"]["threshold"]


def test_html_report_is_self_contained(compared):
    html = compared["html"]
    assert "default-src 'none'" in html and "<script" not in html.lower() and "<link" not in html.lower()
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "url(" not in html and "@import" not in html
    for uri in sources:
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "arm B" in html and "dermoscopy" in html and "Fitted alert thresholds" in html
    assert compared["report"]["format"] == "privascan-eval"


def test_out_holds_exactly_the_two_reports(compared):
    assert files_under(compared["out"]) == {"report.json", "report.html"}


def test_csv_dataset_subgroups_map_file_and_restricted_predictions(dataset, environment, tmp_path):
    map_file = tmp_path / "ham10000.toml"
    map_file.write_text('[map]\nmel = "melanoma"\nnv = "melanocytic_nevus"\nbkl = "seborrheic_keratosis"\n')
    csv_path = tmp_path / "labels.csv"
    # One more row whose label is HTML: it must come out escaped in the report.
    rows = (dataset / "labels.csv").read_text().splitlines()
    csv_path.write_text("\n".join([rows[0]] + [r.replace("photos/", str(dataset / "photos") + "/") for r in rows[1:]]
                                  + [f"{dataset / 'photos' / 'nv' / '0.jpg'},<b>nv</b>,I"]) + "\n")
    out = tmp_path / "report"
    code = cli.main([
        "eval", str(csv_path), "--out", str(out), "--map-file", str(map_file), "--map", "<b>nv</b>=melanocytic_nevus",
        "--subgroup-column", "fitzpatrick", "--restrict-to-mapped", "--ece-bins", "5", "--quiet",
    ])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    images = analysed_images(report)
    assert len(images) == 3 * PER_LABEL + 1
    classes = set(LABELS.values())
    for image in images:
        entry = image["arms"]["A"]
        assert entry["predicted"] in classes  # restricted: never a condition outside the dataset
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0)
        assert set(entry["bank_probabilities"]) == classes
    metrics = report["arms"][0]["metrics"]
    assert metrics["confusion_matrix"]["predicted"] == metrics["confusion_matrix"]["true"]
    assert len(metrics["reliability"]) == 5
    subgroups = report["arms"][0]["subgroups"]
    assert list(subgroups) == ["I", "II", "III"]
    assert sum(group["n"] for group in subgroups.values()) == len(images)
    for name, group in subgroups.items():
        members = [i for i in images if i["subgroup"] == name]
        assert group["n"] == len(members) == sum(map(sum, group["confusion_matrix"]["counts"]))
    html = (out / "report.html").read_text()
    assert "<b>nv</b>" not in html and "&lt;b&gt;nv&lt;/b&gt;" in html
    assert "By fitzpatrick" in html


def test_eval_writes_nothing_outside_out(dataset, environment, tmp_path, monkeypatch):
    """Audit every file opened for writing (any thread) during a whole run: all of it is under --out."""
    import matplotlib.font_manager  # noqa: F401 - its one-off font cache is matplotlib's, made before recording

    from tests.test_no_disk_writes import RECORDER

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = files_under(tmp_path)
    dataset_before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    out = tmp_path / "out"
    RECORDER.writes.clear()
    RECORDER.active = True
    try:
        code = cli.main(["eval", str(dataset / "photos"), "--out", str(out), *MAPS, "--quiet",
                         "--compare-template-set", "dermoscopy"])
    finally:
        RECORDER.active = False
    assert code == 0
    assert any(path.endswith("report.json") for _, path in RECORDER.writes)  # the audit does see writes
    outside = [(event, path) for event, path in RECORDER.writes if not Path(path).resolve().is_relative_to(out.resolve())]
    assert outside == []
    assert files_under(tmp_path) - before == {"out", "out/report.json", "out/report.html"}
    assert list(cwd.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == dataset_before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--map", "mel=melanoma"], "nv are not mapped|bkl, nv are not mapped"),
        (["--map=mel=melanomma", *MAPS[1:]], "melanomma that bank 'dermatology' does not have"),
        ([*MAPS, "--map", "mel"], "DATASET_LABEL=CONDITION_ID"),
        ([*MAPS, "--overrides-out", "o.toml"], "--overrides-out needs --fit-thresholds"),
        ([*MAPS, "--fit-thresholds", "basal_cell_carcinoma=0.9"], "no dataset label maps to"),
        ([*MAPS, "--fit-thresholds", "melanoma=95"], "sensitivity in \\(0, 1\\]"),
        ([*MAPS, "--template-set", "xray"], "no template set 'xray'"),
        ([*MAPS, "--compare-template-set", "clinical"], "same bank and template set"),
        ([*MAPS, "--compare-bank", "missing.toml"], "is not a file"),
        ([*MAPS, "--subgroup-column", "fitzpatrick"], "needs a CSV dataset"),
        ([*MAPS, "--app", "radiology"], "no clinical app 'radiology'"),
    ],
)
def test_mistakes_are_explained_and_nothing_is_written(dataset, environment, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["eval", str(dataset / "photos"), "--out", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("privascan eval: error: ") and re.search(message, error), error
    assert list(tmp_path.iterdir()) == []


def test_compare_bank_from_a_file(dataset, environment, tmp_path):
    """A second bank file (different melanoma descriptions) is arm B; its thresholds are its own."""
    source = Path(cli.__file__).resolve().parents[1] / "prompts" / "dermatology.toml"
    text = source.read_text().replace('name = "dermatology"', 'name = "dermatology-terse"', 1)
    terse, replaced = re.subn(r'(id = "melanoma"\nlabel = "Melanoma"\ngroups = \["malignant"\]\ndescriptions = \[)[^\]]*\]',
                              r'\1"a dark irregular mole"]', text, count=1)
    assert replaced == 1
    other = tmp_path / "terse.toml"
    other.write_text(terse)
    out = tmp_path / "out"
    assert cli.main(["eval", str(dataset / "photos"), "--out", str(out), *MAPS, "--quiet", "--compare-bank", str(other)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [arm["bank"] for arm in report["arms"]] == ["dermatology", "dermatology-terse"]
    assert report["arms"][1]["origin"] == "file terse.toml"
    a = [i["arms"]["A"]["probabilities"]["melanoma"] for i in analysed_images(report)]
    b = [i["arms"]["B"]["probabilities"]["melanoma"] for i in analysed_images(report)]
    assert a != b


def test_fit_calibration_writes_the_temperature_and_the_app_applies_it(dataset, environment, tmp_path, tiny_model_dir, monkeypatch, capsys):
    out = tmp_path / "report"
    overrides = tmp_path / "clinic.toml"
    assert cli.main(["eval", str(dataset / "photos"), "--out", str(out), *MAPS, "--fit-calibration",
                     "--overrides-out", str(overrides), "--out-of-scope", str(dataset / "photos" / "nv"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    calibration = report["calibration"]
    assert calibration["validation_images"] + calibration["held_out_images"] == report["dataset"]["analysed"]
    rows = [r for r in report["images"] if r["analysed"]]
    assert all("split" in r for r in rows)
    assert "temperature" in tomllib.loads(overrides.read_text())["calibration"]
    assert tomllib.loads(overrides.read_text())["calibration"]["temperature"] == calibration["temperature"]
    assert f"temperature {calibration['temperature']}" in printed
    before, after = calibration["held_out"]["before"], calibration["held_out"]["after"]
    assert before["n"] == after["n"] == calibration["held_out_images"]
    assert after["nll"] is not None and before["ece"] is not None
    # The fit minimises the validation split's NLL over a range that holds T = 1: it can only improve there.
    validation = calibration["validation"]
    assert validation["after"]["nll"] <= validation["before"]["nll"] + 1e-9
    # No skin-type column: the estimated ITA band is the subgroup.
    assert report["dataset"]["subgroup_column"] == "skin tone (estimated ITA band)"
    assert set(report["arms"][0]["subgroups"]) <= {"very_light", "light", "intermediate", "tan", "brown", "dark", "not estimated"}
    # The tiny model's random weights cannot judge scope: nothing is rejected, and the report says so.
    scope = report["out_of_scope"]
    assert scope["images"] == PER_LABEL and scope["not_judged"] == PER_LABEL and scope["rejection_rate"] is None
    html = (out / "report.html").read_text()
    assert "Calibration (temperature scaling, arm A)" in html and f"Temperature {calibration['temperature']}" in html
    assert "Scope gate on out-of-scope pictures" in html and f"{PER_LABEL} pictures: 0 rejected" in html
    # The app loads the file and says its probabilities are calibrated.
    monkeypatch.setenv("PRIVASCAN_BANK_OVERRIDES", str(overrides))
    app = make_app(tiny_model_dir)
    assert app.extensions["privascan_registry"].banks["dermatology"].temperature == calibration["temperature"]


def test_compare_int8_scores_the_same_crops_through_the_quantized_tower(dataset, environment, tmp_path, capsys):
    from plugins.medsiglip.classifier import is_quantized

    quantized_passes = []
    real = MedSigLIPClassifier.embed_crops

    def counting(self, crops):
        quantized_passes.append(is_quantized(self.model.vision_model))
        return real(self, crops)

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MedSigLIPClassifier, "embed_crops", counting)
        assert cli.main(["eval", str(dataset / "photos"), "--out", str(out), *MAPS, "--quiet", "--compare-int8"]) == 0
    report = json.loads((out / "report.json").read_text())
    analysed = analysed_images(report)
    assert [arm["description"].split(", ")[-1] for arm in report["arms"]] == ["fp32", "int8"]
    # One fp32 and one int8 vision pass per analysed image.
    assert quantized_passes.count(False) == len(analysed) and quantized_passes.count(True) == len(analysed)
    a = np.array([list(i["arms"]["A"]["probabilities"].values()) for i in analysed])
    b = np.array([list(i["arms"]["B"]["probabilities"].values()) for i in analysed])
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.2  # close, not identical
    comparison = report["comparison"]
    same = sum(i["arms"]["A"]["predicted"] == i["arms"]["B"]["predicted"] for i in analysed)
    assert comparison["same_prediction"] == same
    out_text = capsys.readouterr().out
    assert "int8 minus fp32: balanced accuracy" in out_text and f"same top-1 on {same} of {len(analysed)}" in out_text
    assert cli.main(["eval", str(dataset / "photos"), "--out", str(tmp_path / "o2"), *MAPS, "--quiet",
                     "--compare-int8", "--compare-template-set", "dermoscopy"]) == 2
