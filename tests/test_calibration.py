"""Temperature calibration: fitted on labelled scores, kept in the overrides file, applied by the app."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from webapp.bank_overrides import BankOverridesError, format_overrides, load_overrides
from webapp.calibration import apply_temperature, calibrated_scores, fit_temperature
from webapp.evaluation.calibration import calibration_report
from webapp.evaluation.metrics import expected_calibration_error
from webapp.interfaces import Scores


def overconfident_set(n=4000, k=5, true_temperature=2.5, seed=0):
    """Labels drawn from calibrated probabilities, then the scores sharpened by 1/T: T is the answer."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.2, size=(n, k))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true = np.array([rng.choice(k, p=row) for row in calibrated])
    sharpened = apply_temperature(calibrated, 1 / true_temperature)
    return sharpened, true


def test_fit_recovers_the_temperature_and_lowers_ece():
    probabilities, true = overconfident_set()
    temperature = fit_temperature(probabilities, true)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(probabilities.max(1), probabilities.argmax(1) == true)
    after_p = apply_temperature(probabilities, temperature)
    after = expected_calibration_error(after_p.max(1), after_p.argmax(1) == true)
    assert after < before / 3
    assert np.array_equal(after_p.argmax(1), probabilities.argmax(1))  # the ranking never changes


def test_calibration_report_fits_on_validation_and_measures_held_out():
    probabilities, true = overconfident_set(n=2000)
    ids = [f"c{i}" for i in range(probabilities.shape[1])]
    validation = np.arange(len(true)) % 2 == 0
    report = calibration_report(probabilities, [ids[t] for t in true], ids, validation, 10)
    assert report["validation_images"] == 1000 and report["held_out_images"] == 1000
    assert report["temperature"] == fit_temperature(probabilities[validation], true[validation])
    held = report["held_out"]
    assert held["after"]["ece"] < held["before"]["ece"] and held["after"]["nll"] < held["before"]["nll"]


def test_calibrated_scores_divide_the_logits():
    logits = np.array([2.0, 1.0, 0.0])
    p = np.exp(logits) / np.exp(logits).sum()
    scores = Scores(["a", "b", "c"], logits, p, np.zeros(3))
    scaled = calibrated_scores(scores, 2.0)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum()
    assert np.allclose(scaled.probabilities, expected)
    assert calibrated_scores(scores, None) is scores


def test_overrides_file_carries_the_temperature(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text(format_overrides("dermatology", {"melanoma": 0.2}, ["c"], temperature=1.7))
    overrides = load_overrides(path)
    assert overrides.temperature == 1.7 and overrides.thresholds == {"melanoma": 0.2}
    path.write_text('bank = "dermatology"\n[calibration]\ntemperature = -1\n')
    with pytest.raises(BankOverridesError, match="temperature is -1"):
        load_overrides(path)
    path.write_text('[calibration]\ntemp = 2\n')
    with pytest.raises(BankOverridesError, match="holds only temperature"):
        load_overrides(path)
