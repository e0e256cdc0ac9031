"""Evaluation metrics, dataset reading, threshold fitting and bank overrides, on hand-computed examples.

Every expected number here was worked out by hand (the working is in the
comments), not produced by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from webapp.bank_overrides import (
    BankOverridesError,
    apply_bank_overrides,
    format_overrides,
    load_overrides,
    with_thresholds,
)
from webapp.evaluation import metrics
from webapp.evaluation.dataset import (
    DatasetError,
    load_dataset,
    load_map_file,
    parse_map_arguments,
    resolve_mapping,
)
from webapp.evaluation.thresholds import fit_threshold, fit_thresholds, parse_targets, stratified_split
from webapp.plugins import Registry
from tests.helpers import make_app, small_bank

# ------------------------------------------------------------------ AUROC

# Positives score 0.35, 0.8, 0.4; negatives 0.1, 0.4 (a tie across the classes).
# Pairs (positive, negative): (0.35, 0.1) 1, (0.35, 0.4) 0, (0.8, 0.1) 1,
# (0.8, 0.4) 1, (0.4, 0.1) 1, (0.4, 0.4) 1/2  ->  4.5 / 6 = 0.75.
TIED_SCORES = [0.1, 0.4, 0.35, 0.8, 0.4]
TIED_POSITIVE = [False, False, True, True, True]


def test_midranks_share_tied_ranks():
    # Sorted: 0.1 (1), 0.35 (2), 0.4 and 0.4 (3 and 4 -> 3.5 each), 0.8 (5).
    assert metrics.midranks(TIED_SCORES).tolist() == [1.0, 3.5, 2.0, 5.0, 3.5]


def test_auroc_of_a_ranking_with_a_tie_is_the_hand_value():
    assert metrics.auroc(TIED_SCORES, TIED_POSITIVE) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "scores, positive, expected",
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),  # every positive above every negative
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),  # all tied: every pair counts one half
        ([0.3, 0.6, 0.4], [True, False, True], 0.0),  # the negative is above both positives
        # Positives 0.9 and 0.2, negatives 0.1 and 0.5: (0.9,0.1) 1, (0.9,0.5) 1, (0.2,0.1) 1, (0.2,0.5) 0.
        ([0.9, 0.1, 0.5, 0.2], [True, False, False, True], 0.75),
    ],
)
def test_auroc_small_cases(scores, positive, expected):
    assert metrics.auroc(scores, positive) == pytest.approx(expected)


def test_auroc_is_undefined_with_one_class_only():
    assert metrics.auroc([0.2, 0.7], [True, True]) is None
    assert metrics.auroc([0.2, 0.7], [False, False]) is None


def test_roc_curve_points_and_area_equal_the_tied_auroc():
    fpr, tpr, thresholds = metrics.roc_curve(TIED_SCORES, TIED_POSITIVE)
    # Thresholds 0.8, 0.4, 0.35, 0.1: TPR 1/3, 2/3 (one positive at 0.4), 1, 1;
    # FPR 0, 1/2 (the negative at 0.4), 1/2, 1.
    assert thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert fpr.tolist() == pytest.approx([0, 0, 0.5, 0.5, 1])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(0.75)


def test_one_vs_rest_and_macro_auroc():
    true = ["a", "a", "b", "c"]
    probabilities = {
        "a": [0.7, 0.6, 0.2, 0.6],  # positives 0.7, 0.6 vs 0.2, 0.6: 1 + 1 + 1 + 0.5 = 3.5 / 4
        "b": [0.2, 0.3, 0.5, 0.1],  # 0.5 above all three: 1.0
        "c": [0.1, 0.1, 0.3, 0.3],  # 0.3 vs 0.1, 0.1, 0.3: 1 + 1 + 0.5 = 2.5 / 3
    }
    per_class = metrics.one_vs_rest_auroc(probabilities, true)
    assert per_class["a"] == pytest.approx(0.875)
    assert per_class["b"] == pytest.approx(1.0)
    assert per_class["c"] == pytest.approx(2.5 / 3)
    assert metrics.macro_average(per_class) == pytest.approx((0.875 + 1.0 + 2.5 / 3) / 3)
    assert metrics.macro_average({"a": None, "b": 0.5}) == 0.5
    assert metrics.macro_average([None]) is None


def test_auroc_agrees_with_scikit_learn_on_random_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")  # a cross-check only; not a dependency
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 6, 40) / 5  # few distinct values: many ties
        positive = rng.random(40) < 0.4
        if positive.all() or not positive.any():
            continue
        assert metrics.auroc(scores, positive) == pytest.approx(sklearn_metrics.roc_auc_score(positive, scores))


# ------------------------------------------------------- confusion and rates

# Labels m, n, s; "x" is a bank condition the dataset does not contain.
TRUE = ["m", "m", "m", "n", "n", "s"]
PREDICTED = ["m", "n", "x", "n", "n", "m"]


def test_confusion_matrix_with_an_other_column():
    matrix = metrics.confusion_matrix(TRUE, PREDICTED, ["m", "n", "s"], other="other")
    assert matrix.tolist() == [
        [1, 1, 0, 1],  # m: right once, called n once, called x once
        [0, 2, 0, 0],
        [1, 0, 0, 0],  # s: called m
    ]
    with pytest.raises(ValueError, match="not one of the labels"):
        metrics.confusion_matrix(TRUE, PREDICTED, ["m", "n", "s"])


def test_sensitivity_specificity_accuracy_and_balanced_accuracy_by_hand():
    rates = metrics.per_class_sensitivity_specificity(TRUE, PREDICTED, ["m", "n", "s"])
    # m: 1 of 3 found; of the 3 non-m images (n, n, s) the s was called m: 2/3.
    assert (rates["m"].sensitivity, rates["m"].specificity) == pytest.approx((1 / 3, 2 / 3))
    # n: both found; of the 4 non-n images one m was called n: 3/4.
    assert (rates["n"].sensitivity, rates["n"].specificity) == pytest.approx((1.0, 0.75))
    # s: missed; nothing else was called s: 5/5.
    assert (rates["s"].sensitivity, rates["s"].specificity) == pytest.approx((0.0, 1.0))
    assert metrics.accuracy(TRUE, PREDICTED) == pytest.approx(3 / 6)
    assert metrics.balanced_accuracy(TRUE, PREDICTED, ["m", "n", "s"]) == pytest.approx((1 / 3 + 1 + 0) / 3)


def test_balanced_accuracy_ignores_classes_without_images_and_resists_imbalance():
    true = ["nv"] * 9 + ["mel"]
    always_nevus = ["nv"] * 10
    assert metrics.accuracy(true, always_nevus) == pytest.approx(0.9)
    assert metrics.balanced_accuracy(true, always_nevus, ["nv", "mel", "bcc"]) == pytest.approx(0.5)
    assert metrics.one_vs_rest_rates(true, always_nevus, "bcc").sensitivity is None


def test_rates_at_threshold_include_the_threshold_itself():
    rates = metrics.rates_at_threshold([0.1, 0.3, 0.35, 0.5], [False, True, False, True], 0.3)
    # Called: 0.3 (positive), 0.35 (negative), 0.5 (positive).
    assert (rates.true_positives, rates.false_negatives, rates.true_negatives, rates.false_positives) == (2, 0, 1, 1)


# ------------------------------------------------------------- calibration

CONFIDENCE = [0.9, 0.8, 0.3, 0.6]
CORRECT = [True, False, False, True]


def test_ece_on_four_predictions_by_hand():
    # Ten bins: each prediction alone in its bin, so ECE = mean |correct - confidence|
    # = (0.1 + 0.8 + 0.3 + 0.4) / 4 = 0.4.
    assert metrics.expected_calibration_error(CONFIDENCE, CORRECT, 10) == pytest.approx(0.4)
    # Two bins: [0, 0.5] holds 0.3 (wrong): 1/4 * |0 - 0.3| = 0.075;
    # (0.5, 1] holds 0.9, 0.8, 0.6 with 2 right: 3/4 * |2/3 - 2.3/3| = 3/4 * 0.1 = 0.075.
    assert metrics.expected_calibration_error(CONFIDENCE, CORRECT, 2) == pytest.approx(0.15)


def test_reliability_bins_are_equal_width_and_upper_inclusive():
    bins = metrics.reliability_bins([0.0, 0.5, 0.51, 1.0], [True, True, False, True], 2)
    assert [(b.lower, b.upper, b.count) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert bins[1].accuracy == 0.5 and bins[1].confidence == pytest.approx(0.755)
    empty = metrics.reliability_bins([], [], 10)
    assert all(b.count == 0 and b.accuracy is None for b in empty)
    assert metrics.expected_calibration_error([], [], 10) is None
    with pytest.raises(ValueError):
        metrics.reliability_bins([1.2], [True])


def test_wilson_interval_and_mcnemar_by_hand():
    # 0 of 4: upper bound z^2 / (n + z^2) = 3.8415 / 7.8415.
    low, high = metrics.wilson_interval(0, 4)
    assert low == 0.0 and high == pytest.approx(3.841459 / 7.841459, rel=1e-5)
    assert metrics.wilson_interval(0, 0) is None
    # 5 discordant images all favouring one side: 2 * (1/2)^5 = 0.0625.
    assert metrics.mcnemar_exact_p(0, 5) == pytest.approx(0.0625)
    assert metrics.mcnemar_exact_p(1, 1) == 1.0
    assert metrics.mcnemar_exact_p(0, 0) == 1.0


# ------------------------------------------------------------ thresholds


def test_fit_threshold_is_the_highest_reaching_the_target():
    positives = [0.9, 0.3, 0.6, 0.2]  # descending: 0.9, 0.6, 0.3, 0.2
    assert fit_threshold(positives, 0.75) == 0.3  # 3 of 4 needed: the 3rd highest
    assert fit_threshold(positives, 0.76) == 0.2  # ceil(3.04) = 4
    assert fit_threshold(positives, 0.5) == 0.6
    assert fit_threshold(positives, 1.0) == 0.2
    assert fit_threshold([0.1234567], 1.0) == 0.123456  # rounded down, never up


def test_fit_thresholds_report_both_splits():
    true = ["mel", "mel", "mel", "mel", "nv", "nv", "nv", "nv"]
    melanoma = np.array([0.9, 0.3, 0.6, 0.2, 0.1, 0.35, 0.25, 0.5])
    validation = np.array([True, True, False, False, True, True, False, False])
    result = fit_thresholds({"mel": melanoma}, true, validation, {"mel": 1.0}, {"mel": 0.4})["mel"]
    # Validation melanomas score 0.9 and 0.3: sensitivity 1.0 needs threshold 0.3.
    assert result["threshold"] == 0.3
    # Validation: both melanomas called; nevi 0.1 (no) and 0.35 (yes): specificity 1/2.
    assert (result["validation"]["sensitivity"], result["validation"]["specificity"]) == (1.0, 0.5)
    # Held out: melanomas 0.6 (yes), 0.2 (no); nevi 0.25 (no), 0.5 (yes).
    assert (result["held_out"]["sensitivity"], result["held_out"]["specificity"]) == (0.5, 0.5)
    # The current 0.4 on the held-out half: melanomas 0.6 yes, 0.2 no; nevi 0.25 no, 0.5 yes.
    assert (result["current_held_out"]["sensitivity"], result["current_held_out"]["specificity"]) == (0.5, 0.5)
    with pytest.raises(DatasetError, match="no validation image"):
        fit_thresholds({"mel": melanoma}, true, np.zeros(8, dtype=bool), {"mel": 0.9}, {"mel": 0.4})


def test_stratified_split_keeps_each_label_on_both_sides():
    labels = ["a"] * 4 + ["b"] * 2 + ["c"]
    validation = stratified_split(labels, 0.5, seed=0)
    assert validation[:4].sum() == 2 and validation[4:6].sum() == 1
    assert validation.tolist() == stratified_split(labels, 0.5, seed=0).tolist()  # same seed, same split
    assert any(stratified_split(labels, 0.5, seed=s).tolist() != validation.tolist() for s in range(1, 6))
    with pytest.raises(DatasetError):
        stratified_split(labels, 1.0, seed=0)


def test_parse_targets():
    assert parse_targets(["melanoma=0.95", "bcc=0.9,scc=1"]) == {"melanoma": 0.95, "bcc": 0.9, "scc": 1.0}
    for bad in ("melanoma", "melanoma=1.5", "melanoma=0", "=0.9", "melanoma=high"):
        with pytest.raises(DatasetError):
            parse_targets([bad])


# --------------------------------------------------------- dataset, mapping


def _touch_image(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def test_folder_dataset_reads_one_subfolder_per_label(tmp_path):
    for name in ("mel/a.jpg", "mel/deeper/b.png", "nv/c.JPG", "nv/.hidden.jpg", ".git/x.jpg"):
        _touch_image(tmp_path / name)
    (tmp_path / "nv" / "notes.txt").write_text("not an image")
    dataset = load_dataset(tmp_path)
    assert [(i.name, i.label) for i in dataset.images] == [("mel/a.jpg", "mel"), ("mel/deeper/b.png", "mel"), ("nv/c.JPG", "nv")]
    assert dataset.labels == ["mel", "nv"]
    with pytest.raises(DatasetError, match="CSV"):
        load_dataset(tmp_path, subgroup_column="fitzpatrick")


def test_csv_dataset_with_header_subgroups_and_relative_paths(tmp_path):
    _touch_image(tmp_path / "img" / "1.jpg")
    _touch_image(tmp_path / "img" / "2.jpg")
    (tmp_path / "set.csv").write_text("path,label,fitzpatrick\nimg/1.jpg,mel,V\nimg/2.jpg,nv,\n")
    dataset = load_dataset(tmp_path / "set.csv", "fitzpatrick")
    assert [(i.label, i.subgroup) for i in dataset.images] == [("mel", "V"), ("nv", "(missing)")]
    assert dataset.images[0].path == tmp_path / "img" / "1.jpg"
    (tmp_path / "plain.csv").write_text("img/1.jpg,mel,I\n")
    assert load_dataset(tmp_path / "plain.csv", "subgroup").images[0].subgroup == "I"
    with pytest.raises(DatasetError, match="no column 'skin'"):
        load_dataset(tmp_path / "set.csv", "skin")
    (tmp_path / "missing.csv").write_text("path,label\nimg/nope.jpg,mel\n")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing.csv")


def test_mapping_from_arguments_and_files(tmp_path):
    assert parse_map_arguments(["mel=melanoma", "nv = nevus"]) == {"mel": "melanoma", "nv": "nevus"}
    with pytest.raises(DatasetError, match="LABEL=CONDITION|DATASET_LABEL=CONDITION_ID"):
        parse_map_arguments(["mel"])
    with pytest.raises(DatasetError, match="mapped twice"):
        parse_map_arguments(["mel=melanoma", "mel=nevus"])
    (tmp_path / "map.toml").write_text('[map]\nmel = "melanoma"\nnv = "nevus"\n')
    (tmp_path / "flat.toml").write_text('mel = "melanoma"\n')
    (tmp_path / "map.csv").write_text("# HAM10000\nlabel,condition\nmel,melanoma\nnv,nevus\n")
    assert load_map_file(tmp_path / "map.toml") == {"mel": "melanoma", "nv": "nevus"}
    assert load_map_file(tmp_path / "flat.toml") == {"mel": "melanoma"}
    assert load_map_file(tmp_path / "map.csv") == {"mel": "melanoma", "nv": "nevus"}


def test_resolve_mapping_names_unmapped_labels_and_unknown_conditions():
    bank = small_bank()  # melanoma, nevus, seb_k, eczema
    assert resolve_mapping(["mel", "nevus"], {"mel": "melanoma"}, [bank]) == {"mel": "melanoma", "nevus": "nevus"}
    with pytest.raises(DatasetError, match="bkl are not mapped.*--map"):
        resolve_mapping(["mel", "bkl"], {"mel": "melanoma"}, [bank])
    with pytest.raises(DatasetError, match="bcc that bank 'test-derm' does not have"):
        resolve_mapping(["mel"], {"mel": "bcc"}, [bank])


# ---------------------------------------------------------- bank overrides


def test_with_thresholds_replaces_only_the_named_conditions():
    bank = small_bank()
    changed = with_thresholds(bank, {"melanoma": 0.18})
    assert changed.condition("melanoma").alert_threshold == 0.18
    assert changed.condition("nevus").alert_threshold == bank.condition("nevus").alert_threshold
    assert changed.content_hash == bank.content_hash  # prompts unchanged: text embeddings stay valid
    assert bank.condition("melanoma").alert_threshold == 0.5  # the original is untouched
    with pytest.raises(BankOverridesError, match="no condition 'bcc'"):
        with_thresholds(bank, {"bcc": 0.2})


@pytest.mark.parametrize(
    "body, message",
    [
        ("[thresholds]\nmelanoma = 1.5\n", "must be a number in \\[0, 1\\]"),
        ("[thresholds]\nmelanoma = -0.1\n", "must be a number in \\[0, 1\\]"),
        ("[thresholds]\nmelanoma = true\n", "must be a number"),
        ('[thresholds]\nmelanoma = "0.2"\n', "must be a number"),
        ("[threshold]\nmelanoma = 0.2\n", "unknown key"),
        ("thresholds = 3\n", "must be a table"),
        ("[thresholds\n", "TOML"),
    ],
)
def test_bad_overrides_files_are_refused_with_the_reason(tmp_path, body, message):
    path = tmp_path / "overrides.toml"
    path.write_text(body)
    with pytest.raises(BankOverridesError, match=message):
        load_overrides(path)


def test_overrides_written_by_format_read_back(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text(format_overrides("test-derm", {"melanoma": 0.18, "seb_k": 0.7}, ["fitted on 10 images"]))
    overrides = load_overrides(path)
    assert overrides.bank == "test-derm" and overrides.thresholds == {"melanoma": 0.18, "seb_k": 0.7}
    assert path.read_text().startswith("# fitted on 10 images\n")


def test_apply_bank_overrides_to_a_registry(tmp_path):
    registry = Registry(banks={"test-derm": small_bank()})
    path = tmp_path / "o.toml"
    path.write_text('bank = "test-derm"\n[thresholds]\nmelanoma = 0.2\n')
    apply_bank_overrides(registry, {"BANK_OVERRIDES": str(path)})
    assert registry.banks["test-derm"].condition("melanoma").alert_threshold == 0.2
    path.write_text('bank = "chest"\n[thresholds]\nmelanoma = 0.2\n')
    with pytest.raises(BankOverridesError, match="no bank named 'chest'"):
        apply_bank_overrides(registry, {"BANK_OVERRIDES": str(path)})
    apply_bank_overrides(registry, {"BANK_OVERRIDES": None})  # unset: nothing happens


def test_the_app_loads_overrides_from_its_environment(app_factory, tmp_path, monkeypatch):
    path = tmp_path / "clinic-thresholds.toml"
    path.write_text("[thresholds]\nmelanoma = 0.18\nbasal_cell_carcinoma = 0.2\n")  # no bank: the default app's
    monkeypatch.setenv("PRIVASCAN_BANK_OVERRIDES", str(path))
    app = app_factory(LOAD_MODELS_AT_START=False)
    assert app.config["BANK_OVERRIDES"] == str(path)
    bank = app.extensions["privascan_registry"].banks["dermatology"]
    assert bank.condition("melanoma").alert_threshold == 0.18
    assert bank.condition("basal_cell_carcinoma").alert_threshold == 0.2
    assert bank.condition("melanocytic_nevus").alert_threshold == 0.7  # the shipped value


def test_the_app_refuses_to_start_with_a_bad_overrides_file(tiny_model_dir, tmp_path, monkeypatch):
    path = tmp_path / "typo.toml"
    path.write_text("[thresholds]\nmelanomma = 0.18\n")
    monkeypatch.setenv("PRIVASCAN_BANK_OVERRIDES", str(path))
    with pytest.raises(BankOverridesError, match="no condition 'melanomma'"):
        make_app(tiny_model_dir, LOAD_MODELS_AT_START=False)
    monkeypatch.setenv("PRIVASCAN_BANK_OVERRIDES", str(tmp_path / "absent.toml"))
    with pytest.raises(BankOverridesError, match="file not found"):
        make_app(tiny_model_dir, LOAD_MODELS_AT_START=False)


def test_undefined_metrics_are_none_not_nan():
    assert metrics.balanced_accuracy([], [], ["a"]) is None
    assert metrics.accuracy([], []) is None
    assert metrics.one_vs_rest_rates(["a"], ["a"], "a").specificity is None  # no negative image
