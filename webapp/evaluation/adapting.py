"""Fit an adapter on frozen image embeddings: a linear probe or few-shot prototypes, chosen on validation.

The labelled images are split per condition into train / validation / test
(stratified, seeded, so ``privascan eval --adapter`` can find the same test
images again from the seed alone). Both methods are fitted on the training
images with each of a few hyperparameters:

- linear probe: multinomial logistic regression (scikit-learn) with balanced
  class weights, regularisation strength ``C`` from ``PROBE_C``;
- prototypes (Tip-Adapter's idea without its per-image cache, which would put
  every training embedding into the file): each condition's mean unit
  embedding, mixed with the bank's text embedding by ``alpha`` from
  ``ALPHAS`` and scaled by the model's own logit scale; ``alpha = 0`` is
  exactly zero-shot.

The method and hyperparameter with the best validation balanced accuracy win
(ties: lower log loss, then the simpler prototypes); the winner is refitted on
training plus validation images. Test images take no part: they are what the
report measures the adapter on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import metrics
from .dataset import DatasetError
from .thresholds import stratified_split

PROBE_C = (0.01, 0.1, 1.0, 10.0, 100.0)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
TRAIN, VALIDATION, TEST = "train", "validation", "test"


def split_images(conditions: Sequence[str], test_fraction: float, validation_fraction: float, seed: int) -> np.ndarray:
    """Per image "train", "validation" or "test"; every condition gets at least one image in each used part.

    ``validation_fraction`` is a share of what remains after the test images.
    """
    conditions = list(conditions)
    counts = {c: conditions.count(c) for c in sorted(set(conditions))}
    if len(counts) < 2:
        only = next(iter(counts), "none")
        raise DatasetError(
            f"the dataset has one condition only ({only}); an adapter tells conditions apart, so it needs "
            "labelled images of at least two."
        )
    needed = 3 if test_fraction > 0 else 2
    few = {c: n for c, n in counts.items() if n < needed}
    if few:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(few.items()))
        why = ("one to fit, one to validate and one to test" if needed == 3 else "one to fit and one to validate")
        extra = (
            "; or --test-split 0 to hold out no test images (then measure the adapter on another labelled set "
            "with `privascan eval --adapter ... --unseen`)" if needed == 3 and all(n >= 2 for n in few.values()) else ""
        )
        raise DatasetError(
            f"too few images for condition(s) {listed}: each needs at least {needed} ({why}){extra}."
        )
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError("--test-split must be at least 0 and below 1, e.g. 0.3.")
    parts = np.full(len(conditions), TRAIN, dtype=object)
    rest = np.arange(len(conditions))
    if test_fraction > 0:
        test = stratified_split(conditions, test_fraction, seed)
        parts[test] = TEST
        rest = np.flatnonzero(~test)
    validation = stratified_split([conditions[i] for i in rest], validation_fraction, seed + 1)
    parts[rest[validation]] = VALIDATION
    return parts


def split_counts(conditions: Sequence[str], parts: Sequence[str]) -> dict[str, dict[str, int]]:
    """{part: {condition: images}}: what the adapter file records about its split (counts, never names)."""
    result: dict[str, dict[str, int]] = {}
    for part in (TRAIN, VALIDATION, TEST):
        chosen = [c for c, p in zip(conditions, parts) if p == part]
        result[part] = {c: chosen.count(c) for c in sorted(set(conditions))}
    return result


def unit(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def fit_linear_probe(features: np.ndarray, true: Sequence[str], classes: Sequence[str], c: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of a multinomial logistic regression on unit embeddings, rows in ``classes`` order."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit(unit(features), np.asarray(true, dtype=object))
    order = [list(model.classes_).index(k) for k in classes]
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: split it so softmax = its sigmoid
        w, b = model.coef_[0], model.intercept_[0]
        weight, bias = np.stack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    else:
        weight, bias = model.coef_, model.intercept_
    return weight[order], bias[order]


def prototype_weights(
    features: np.ndarray, true: Sequence[str], classes: Sequence[str], text: np.ndarray,
    scale: float, logit_bias: float, alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with W = scale * ((1 - alpha) * text + alpha * prototype): SigLIP's logit on a mixed class vector."""
    x = unit(features)
    true = np.asarray(true, dtype=object)
    prototypes = unit(np.stack([x[true == k].mean(axis=0) for k in classes]))
    weight = scale * ((1.0 - alpha) * np.asarray(text, dtype=np.float64) + alpha * prototypes)
    return weight, np.full(len(classes), float(logit_bias))


def figures(logits: np.ndarray, true: Sequence[str], classes: Sequence[str], ece_bins: int = 10) -> dict:
    """Validation figures of one scorer: balanced accuracy, macro AUROC, ECE, log loss."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    choice = probabilities.argmax(axis=1)
    predicted = [classes[i] for i in choice]
    confidence = probabilities[np.arange(len(choice)), choice]
    correct = np.array([t == p for t, p in zip(true, predicted)], dtype=bool)
    index = {k: i for i, k in enumerate(classes)}
    truth = probabilities[np.arange(len(choice)), [index[t] for t in true]]
    aurocs = metrics.one_vs_rest_auroc({k: probabilities[:, i] for i, k in enumerate(classes)}, list(true))
    return {
        "n": len(true),
        "accuracy": metrics.accuracy(list(true), predicted),
        "balanced_accuracy": metrics.balanced_accuracy(list(true), predicted, list(classes)),
        "macro_auroc": metrics.macro_average(aurocs),
        "ece": metrics.expected_calibration_error(confidence, correct, ece_bins),
        "log_loss": float(-np.mean(np.log(np.maximum(truth, 1e-300)))),
    }


@dataclass
class Fitted:
    method: str
    weight: np.ndarray
    bias: np.ndarray
    hyperparameters: dict
    validation: dict  # {"linear_probe": figures, "prototypes": figures, "zero_shot": figures}


def _rank(figure: dict, simpler: int) -> tuple:
    balanced = figure["balanced_accuracy"] if figure["balanced_accuracy"] is not None else -1.0
    return (-round(balanced, 9), round(figure["log_loss"], 9), simpler)


def fit_adapter(
    features: np.ndarray,
    true: Sequence[str],
    parts: Sequence[str],
    classes: Sequence[str],
    text: np.ndarray,
    scale: float,
    logit_bias: float,
) -> Fitted:
    """Choose method and hyperparameter on validation, then refit the winner on train + validation."""
    features = np.asarray(features, dtype=np.float64)
    true = np.asarray(true, dtype=object)
    parts = np.asarray(parts, dtype=object)
    train, validation = parts == TRAIN, parts == VALIDATION
    for name, mask in (("training", train), ("validation", validation)):
        missing = sorted(set(classes) - set(true[mask]))
        if missing:
            raise DatasetError(
                f"no {name} image of {', '.join(missing)} could be analysed; add readable photos of it."
            )
    x_val, y_val = features[validation], list(true[validation])

    probe = []
    for c in PROBE_C:
        w, b = fit_linear_probe(features[train], true[train], classes, c)
        probe.append((figures(unit(x_val) @ w.T + b, y_val, classes), c))
    best_probe = min(probe, key=lambda item: _rank(item[0], 1))

    mixes = []
    for alpha in ALPHAS:
        w, b = prototype_weights(features[train], true[train], classes, text, scale, logit_bias, alpha)
        mixes.append((figures(unit(x_val) @ w.T + b, y_val, classes), alpha))
    # Among equally good mixes prefer the one closest to zero-shot (smaller alpha): less fitted to few images.
    best_mix = min(mixes, key=lambda item: (*_rank(item[0], 0)[:2], item[1]))
    zero_shot = mixes[0][0]

    fit_on = train | validation
    if _rank(best_probe[0], 1) < _rank(best_mix[0], 0):
        method, hyper = "linear_probe", {"C": best_probe[1]}
        weight, bias = fit_linear_probe(features[fit_on], true[fit_on], classes, best_probe[1])
    else:
        method, hyper = "prototypes", {"alpha": best_mix[1], "logit_scale": float(scale), "logit_bias": float(logit_bias)}
        weight, bias = prototype_weights(features[fit_on], true[fit_on], classes, text, scale, logit_bias, best_mix[1])
    if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
        raise DatasetError("the fit did not converge to finite weights; check the images and labels.")
    return Fitted(
        method=method,
        weight=weight.astype(np.float32),
        bias=bias.astype(np.float32),
        hyperparameters=hyper,
        validation={
            "linear_probe": {**best_probe[0], "C": best_probe[1]},
            "prototypes": {**best_mix[0], "alpha": best_mix[1]},
            "zero_shot": zero_shot,
        },
    )

