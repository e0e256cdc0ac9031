"""Fit per-condition alert thresholds for a target sensitivity on a validation split.

The app raises an alert for a condition when its probability (softmax over
the whole bank) is at or above the condition's ``alert_threshold``. For a
target sensitivity s, the highest threshold that still alerts on at least
s of the validation images of that condition is the m-th highest of their
probabilities, m = ceil(s x positives): any higher threshold would miss one
more. It is rounded down (never up) to 6 decimals, so the rounding cannot
cost sensitivity. The held-out images, which took no part in the choice,
then say what sensitivity and specificity a clinic can expect.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import metrics
from .dataset import DatasetError

DECIMALS = 6


def parse_targets(values: Sequence[str]) -> dict[str, float]:
    """``["melanoma=0.95", "bcc=0.9,scc=0.9"]`` -> {condition: target sensitivity}."""
    targets: dict[str, float] = {}
    for value in values:
        for part in value.split(","):
            condition, sep, raw = part.partition("=")
            try:
                target = float(raw)
            except ValueError:
                target = math.nan
            if not sep or not condition.strip() or not 0.0 < target <= 1.0:
                raise DatasetError(
                    f"--fit-thresholds {part!r}: write CONDITION_ID=SENSITIVITY with a sensitivity in (0, 1], "
                    "e.g. melanoma=0.95."
                )
            targets[condition.strip()] = target
    return targets


def stratified_split(labels: Sequence[str], validation_fraction: float, seed: int) -> np.ndarray:
    """True for validation images: ``validation_fraction`` of each label, chosen at random with ``seed``.

    Stratified so both halves hold every label; a label with at least two
    images always gets at least one image on each side.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError("--validation-split must be between 0 and 1 (exclusive), e.g. 0.5.")
    rng = np.random.default_rng(seed)
    validation = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        members = np.flatnonzero(np.asarray([x == label for x in labels]))
        count = int(round(len(members) * validation_fraction))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        validation[rng.permutation(members)[:count]] = True
    return validation


def fit_threshold(positive_scores: Sequence[float], target_sensitivity: float) -> float:
    """The highest threshold at which ``score >= threshold`` keeps sensitivity >= target."""
    scores = np.sort(np.asarray(positive_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("no positive image to fit a threshold on")
    needed = max(1, math.ceil(target_sensitivity * scores.size - 1e-9))
    return math.floor(float(scores[needed - 1]) * 10**DECIMALS) / 10**DECIMALS


def fit_thresholds(
    bank_probabilities: dict[str, np.ndarray],
    true: Sequence[str],
    validation: np.ndarray,
    targets: dict[str, float],
    current: dict[str, float],
) -> dict[str, dict]:
    """Per condition: the fitted threshold and its rates on both splits, next to the current threshold's."""
    true = np.asarray(true, dtype=object)
    held_out = ~validation
    results = {}
    for condition_id, target in targets.items():
        scores = bank_probabilities[condition_id]
        positive = true == condition_id
        if not np.any(positive & validation):
            raise DatasetError(
                f"no validation image is labelled {condition_id}: a threshold for it cannot be fitted "
                "(more images, or a larger --validation-split)."
            )
        threshold = fit_threshold(scores[positive & validation], target)
        results[condition_id] = {
            "target_sensitivity": target,
            "threshold": threshold,
            "validation": _rates(scores[validation], positive[validation], threshold),
            "held_out": _rates(scores[held_out], positive[held_out], threshold),
            "current_threshold": current[condition_id],
            "current_held_out": _rates(scores[held_out], positive[held_out], current[condition_id]),
        }
    return results


def _rates(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    rates = metrics.rates_at_threshold(scores, positive, threshold)
    return {
        "n": int(positive.size),
        "positives": rates.positives,
        "sensitivity": rates.sensitivity,
        "sensitivity_ci95": metrics.wilson_interval(rates.true_positives, rates.positives),
        "specificity": rates.specificity,
        "specificity_ci95": metrics.wilson_interval(rates.true_negatives, rates.negatives),
    }
