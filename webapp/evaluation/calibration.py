"""Fit a softmax temperature on a validation split and measure it on the held-out rest.

Used by ``privascan eval --fit-calibration``; the temperature goes into the
bank-overrides file and ``webapp.calibration`` applies it in the app.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..calibration import apply_temperature, fit_temperature, negative_log_likelihood
from . import metrics


def calibration_report(
    probabilities: np.ndarray,  # (N, K) whole-bank softmax, bank order
    true: Sequence[str],
    bank_ids: Sequence[str],
    validation: np.ndarray,
    ece_bins: int,
) -> dict:
    """Temperature fitted on ``validation``; ECE and NLL before and after, on each split."""
    column = {cid: i for i, cid in enumerate(bank_ids)}
    true_index = np.array([column[t] for t in true])
    validation = np.asarray(validation, dtype=bool)
    if not validation.any():
        raise ValueError("no validation image to fit a temperature on")
    temperature = fit_temperature(probabilities[validation], true_index[validation])

    def figures(keep: np.ndarray, t: float | None) -> dict:
        p = probabilities[keep] if t is None else apply_temperature(probabilities[keep], t)
        if not keep.any():
            return {"n": 0, "ece": None, "nll": None}
        correct = p.argmax(axis=1) == true_index[keep]
        return {
            "n": int(keep.sum()),
            "ece": metrics.expected_calibration_error(p.max(axis=1), correct, ece_bins),
            "nll": negative_log_likelihood(p, true_index[keep], 1.0),
        }

    held_out = ~validation
    return {
        "temperature": temperature,
        "validation_images": int(validation.sum()),
        "held_out_images": int(held_out.sum()),
        "validation": {"before": figures(validation, None), "after": figures(validation, temperature)},
        "held_out": {"before": figures(held_out, None), "after": figures(held_out, temperature)},
    }
