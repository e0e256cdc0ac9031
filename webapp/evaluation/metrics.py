"""Classification and calibration metrics as small pure functions (numpy only).

Conventions, the same everywhere:

- ``true`` and ``predicted`` are sequences of labels (any hashable, usually
  condition ids); a prediction may be a label outside ``labels`` (the bank
  has more conditions than the dataset), which is simply never correct.
- A metric that is undefined on the data (a sensitivity with no positive
  image, an AUROC with only one class present) is ``None``, never 0 and never
  NaN, so a JSON report says "not defined" instead of a misleading number.
- Scores are probabilities; ranking metrics use only their order.

scikit-learn would give most of these, but it is a large dependency for
twenty lines of arithmetic, and its tie and zero-division conventions would
still need pinning down; these are written to be checked by hand in
``tests/test_evaluation.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

DEFAULT_ECE_BINS = 10


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def accuracy(true: Sequence[Hashable], predicted: Sequence[Hashable]) -> float | None:
    """Share of images whose prediction equals their label."""
    _same_length(true, predicted)
    return _ratio(sum(t == p for t, p in zip(true, predicted)), len(true))


def confusion_matrix(
    true: Sequence[Hashable],
    predicted: Sequence[Hashable],
    labels: Sequence[Hashable],
    other: Hashable | None = None,
) -> np.ndarray:
    """Counts with rows = true label, columns = predicted label, both in ``labels`` order.

    With ``other`` given, one more column counts predictions outside ``labels``
    (conditions of the bank that the dataset does not contain); without it such
    a prediction is an error. A true label outside ``labels`` is an error.
    """
    _same_length(true, predicted)
    index = {label: position for position, label in enumerate(labels)}
    columns = len(labels) + (other is not None)
    matrix = np.zeros((len(labels), columns), dtype=np.int64)
    for t, p in zip(true, predicted):
        if t not in index:
            raise ValueError(f"true label {t!r} is not one of the labels")
        if p in index:
            matrix[index[t], index[p]] += 1
        elif other is not None:
            matrix[index[t], -1] += 1
        else:
            raise ValueError(f"predicted label {p!r} is not one of the labels (pass other= to count it)")
    return matrix


@dataclass(frozen=True)
class Rates:
    """One-vs-rest counts for one label, and the rates they give."""

    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int

    @property
    def positives(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def negatives(self) -> int:
        return self.true_negatives + self.false_positives

    @property
    def sensitivity(self) -> float | None:
        """Recall of the label: found / all images that are it."""
        return _ratio(self.true_positives, self.positives)

    @property
    def specificity(self) -> float | None:
        """Correctly not called the label / all images that are not it."""
        return _ratio(self.true_negatives, self.negatives)


def one_vs_rest_rates(true: Sequence[Hashable], predicted: Sequence[Hashable], label: Hashable) -> Rates:
    """Counts for ``label`` against everything else (predictions outside the labels count as "not it")."""
    _same_length(true, predicted)
    tp = fn = tn = fp = 0
    for t, p in zip(true, predicted):
        if t == label:
            tp += p == label
            fn += p != label
        else:
            fp += p == label
            tn += p != label
    return Rates(tp, fn, tn, fp)


def rates_at_threshold(scores: Sequence[float], positive: Sequence[bool], threshold: float) -> Rates:
    """Counts when "score >= threshold" calls an image positive (how alert thresholds work)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    called = scores >= threshold
    return Rates(
        int(np.sum(called & positive)),
        int(np.sum(~called & positive)),
        int(np.sum(~called & ~positive)),
        int(np.sum(called & ~positive)),
    )


def per_class_sensitivity_specificity(
    true: Sequence[Hashable], predicted: Sequence[Hashable], labels: Sequence[Hashable]
) -> dict[Hashable, Rates]:
    """One-vs-rest ``Rates`` for every label."""
    return {label: one_vs_rest_rates(true, predicted, label) for label in labels}


def balanced_accuracy(
    true: Sequence[Hashable], predicted: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> float | None:
    """Mean sensitivity over the labels that occur in ``true`` (each class weighs the same).

    Unlike accuracy it is not inflated by a common class: always answering
    "nevus" on a set with 90 % nevi scores 0.9 accuracy but 1/k balanced
    accuracy with k classes present.
    """
    _same_length(true, predicted)
    present = [label for label in (labels if labels is not None else sorted(set(true), key=str)) if label in set(true)]
    recalls = [one_vs_rest_rates(true, predicted, label).sensitivity for label in present]
    return float(np.mean(recalls)) if recalls else None


def midranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span (e.g. 2 and 3 -> 2.5)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError("scores must be finite")
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts) + (counts + 1) / 2.0)[inverse]


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve by the Mann-Whitney U statistic, ties counting one half.

    It is the probability that a randomly chosen positive image scores higher
    than a randomly chosen negative one: 0.5 is chance, 1.0 a perfect ranking.
    ``(sum of the positives' midranks - P(P+1)/2) / (P * N)``; ``None`` without
    positives or without negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != positive.shape:
        raise ValueError("scores and labels differ in length")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = midranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], positive: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates, thresholds) for "score >= threshold".

    One point per distinct score, from (0, 0) (threshold above every score) to
    (1, 1); tied scores move both rates at once, so the trapezoidal area under
    these points equals ``auroc``. Needs at least one positive and one negative.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs positive and negative images")
    thresholds = np.unique(scores)[::-1]
    tpr = np.array([0.0] + [np.sum(positive & (scores >= t)) / n_pos for t in thresholds])
    fpr = np.array([0.0] + [np.sum(~positive & (scores >= t)) / n_neg for t in thresholds])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def one_vs_rest_auroc(
    probabilities: dict[Hashable, Sequence[float]], true: Sequence[Hashable]
) -> dict[Hashable, float | None]:
    """AUROC of each label's probability for "this label" against all other images."""
    return {
        label: auroc(scores, [t == label for t in true])
        for label, scores in probabilities.items()
    }


def macro_average(values: dict[Hashable, float | None] | Sequence[float | None]) -> float | None:
    """Unweighted mean of the defined values (``None`` skipped); ``None`` if none is defined."""
    items = values.values() if isinstance(values, dict) else values
    defined = [v for v in items if v is not None]
    return float(np.mean(defined)) if defined else None


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    accuracy: float | None  # share correct in the bin
    confidence: float | None  # mean confidence in the bin


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_ECE_BINS
) -> list[CalibrationBin]:
    """Equal-width bins over [0, 1]: bin i holds confidences in (i/M, (i+1)/M], the first also 0."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidences.shape != correct.shape:
        raise ValueError("confidences and correctness differ in length")
    if confidences.size and (confidences.min() < 0 or confidences.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)
    bins = []
    for i in range(n_bins):
        members = index == i
        count = int(members.sum())
        bins.append(
            CalibrationBin(
                lower=float(edges[i]),
                upper=float(edges[i + 1]),
                count=count,
                accuracy=float(correct[members].mean()) if count else None,
                confidence=float(confidences[members].mean()) if count else None,
            )
        )
    return bins


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_ECE_BINS
) -> float | None:
    """ECE: sum over bins of (share of images in the bin) x |accuracy - mean confidence|.

    ``confidences`` are the probabilities of the predicted class, ``correct``
    whether that prediction was right. 0 is perfectly calibrated: among images
    predicted with 70 % confidence, 70 % are right. Bins as ``reliability_bins``.
    """
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b.count for b in bins)
    if total == 0:
        return None
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count))


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion (sound for small counts and for 0 % or 100 %)."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(only_first_correct: int, only_second_correct: int) -> float:
    """Two-sided exact McNemar p-value: do two classifiers differ on the same images?

    Only discordant images count; under "no difference" each is equally likely
    to favour either, so the smaller count is binomial(n, 1/2).
    """
    n = only_first_correct + only_second_correct
    if n == 0:
        return 1.0
    k = min(only_first_correct, only_second_correct)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels but {len(b)} predictions")
