"""Temperature scaling: a clinic's own calibration of the bank's softmax.

Zero-shot scores are relative: the softmax says how a photo ranks the bank's
conditions against each other, not how often such a photo has the disease.
Temperature scaling (Guo et al. 2017) fits one number T on a labelled set so
that softmax(logits / T) is calibrated there (70 % means right 70 % of the
time, measured by expected calibration error on a held-out split). The
ranking never changes, only how spread the probabilities are.

``privascan eval --fit-calibration`` fits T and writes it into the
bank-overrides file (``[calibration] temperature = T``); the app then shows
calibrated probabilities and says so. Because log-probabilities differ from
logits only by a per-image constant, T applies to stored probabilities too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from .interfaces import Scores

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) row-wise: the same ranking, sharper (T < 1) or flatter (T > 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    logits = np.log(np.clip(p, 1e-300, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def calibrated_scores(scores: Scores, temperature: float | None) -> Scores:
    """``scores`` with probabilities from ``logits / T``; unchanged when T is None."""
    if temperature is None:
        return scores
    logits = np.asarray(scores.logits, dtype=np.float64) / temperature
    logits -= logits.max()
    probabilities = np.exp(logits)
    return dataclasses.replace(scores, probabilities=probabilities / probabilities.sum())


def negative_log_likelihood(probabilities: np.ndarray, true_index: Sequence[int], temperature: float) -> float:
    scaled = apply_temperature(probabilities, temperature)
    picked = scaled[np.arange(len(true_index)), np.asarray(true_index)]
    return float(-np.mean(np.log(np.clip(picked, 1e-300, None))))


def fit_temperature(probabilities: np.ndarray, true_index: Sequence[int]) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimising the negative log-likelihood of the true classes."""
    from scipy.optimize import minimize_scalar

    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError("no image to fit a temperature on")
    if len(true_index) != probabilities.shape[0]:
        raise ValueError("one true class per image is needed")
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(probabilities, true_index, math.exp(log_t)),
        bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(float(math.exp(found.x)), 4)
