"""Run the app's own pipeline over labelled images and turn the scores into metrics.

Each image goes through ``webapp.pipeline.analyse_image`` exactly as a photo
sent to the app does (safe decode, localize, square crop, classify; no
heatmap), with the same registry the app builds. To compare a second bank or
template set ("arm B") on the same images without a second vision pass, the
app's classifier is wrapped for the run: when it offers ``embed_crops`` and
``scores_from_embeddings`` (MedSigLIP does), the crop's embedding from arm A's
pass is scored against arm B's text embeddings; any other classifier simply
classifies the same crop again. Crops and embeddings live in memory for one
image only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..adapter import Adapter
from ..images import ImageRejected, safe_decode
from ..interfaces import ClinicalApp, PromptBank, TemplateSet
from ..pipeline import analyse_image
from ..plugins import Registry
from . import metrics
from .dataset import LabelledImage

OTHER = "(other)"  # confusion-matrix column: a bank condition the dataset does not contain


@dataclass(frozen=True)
class Arm:
    """One bank and template set being measured."""

    key: str  # "A", "B"
    bank: PromptBank
    template_set: TemplateSet
    origin: str  # where the bank came from, for the report
    adapter: Adapter | None = None  # score the same embedding with a fitted adapter instead of the text
    # Score the same crop with another classifier (its own vision pass): --compare-int8's quantized copy.
    classifier: object | None = None
    label: str = ""  # what sets the arm apart when the bank and template set are the same ("int8")

    def describe(self) -> str:
        if self.label:
            return f"bank '{self.bank.name}', template set '{self.template_set.id}', {self.label}"
        if self.adapter is not None:
            return f"{self.adapter.describe()} on bank '{self.bank.name}'"
        return f"bank '{self.bank.name}', template set '{self.template_set.id}'"


@dataclass
class ImageOutcome:
    image: LabelledImage
    condition: str  # the true condition (mapped label)
    analysed: bool = False
    reason: str = ""  # why not analysed
    located: bool = False
    box: list[int] | None = None
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # arm key -> bank-order softmax
    embedding: np.ndarray | None = None  # the crop's image embedding, kept in memory only when asked for
    quality_passed: bool | None = None  # the app's quality gate (eval analyses failed photos anyway)
    skin_tone_band: str | None = None  # ITA band of the skin around the lesion (dermatology)


class EmbeddingKeeper:
    """Classifies as the wrapped classifier does and keeps what arm B needs from the same pass."""

    def __init__(self, classifier):
        self.inner = classifier
        self.name = classifier.name
        self.reuses_embeddings = callable(getattr(classifier, "embed_crops", None)) and callable(
            getattr(classifier, "scores_from_embeddings", None)
        )
        self._kept = None
        self.crop = None  # the last classified crop (an arm with its own classifier scores it again)
        if self.reuses_embeddings:  # only then does the keeper offer embed_crops (webapp.interfaces.EmbedsCrops)
            self.embed_crops = self._embed_and_keep

    def classify(self, crop, bank, template_set):
        self.crop = crop
        if self.reuses_embeddings:
            self._kept = self.inner.embed_crops([crop])
            return self.inner.scores_from_embeddings(self._kept, bank, template_set)[0]
        self._kept = crop
        return self.inner.classify(crop, bank, template_set)

    def _embed_and_keep(self, crops):
        """``embed_crops`` (the pipeline's path for classifiers that have it): the embedding is kept as in ``classify``."""
        self.crop = crops[-1]
        self._kept = self.inner.embed_crops(crops)
        return self._kept

    def rescore(self, bank, template_set):
        """Scores of the last classified crop against another bank or template set."""
        if self._kept is None:
            raise RuntimeError("nothing classified yet")
        if self.reuses_embeddings:
            return self.inner.scores_from_embeddings(self._kept, bank, template_set)[0]
        return self.inner.classify(self._kept, bank, template_set)

    def embedding(self) -> np.ndarray:
        """The last classified crop's image embedding (d,) as numpy."""
        if self._kept is None or not self.reuses_embeddings:
            raise RuntimeError("no embedding kept")
        return self._kept.detach().to("cpu").double().numpy().reshape(-1)

    def forget(self) -> None:
        self._kept = None
        self.crop = None

    def __getattr__(self, name):  # load(), describe(), ... of the real classifier
        return getattr(self.inner, name)


def run_images(
    images: Sequence[LabelledImage],
    mapping: dict[str, str],
    app: ClinicalApp,
    registry: Registry,
    arms: Sequence[Arm],
    max_pixels: int,
    progress: Callable[[], None] = lambda: None,
    keep_embeddings: bool = False,
) -> list[ImageOutcome]:
    """Analyse every image once; arm A is the registry's own bank, later arms reuse the same pass.

    ``keep_embeddings`` keeps each crop's image embedding on its outcome
    (``privascan adapt`` fits on them; they stay in this process's memory).
    """
    first = arms[0]
    if registry.banks[app.bank] is not first.bank:
        raise ValueError("arm A must be the clinical app's bank as registered")
    keeper = EmbeddingKeeper(registry.classifiers[app.classifier])
    if (keep_embeddings or any(arm.adapter is not None for arm in arms)) and not keeper.reuses_embeddings:
        raise ValueError(
            f"classifier {keeper.name} does not expose image embeddings (embed_crops), so no adapter can be fitted or used"
        )
    run_registry = dataclasses.replace(registry, classifiers={**registry.classifiers, app.classifier: keeper})
    outcomes = []
    for item in images:
        outcome = ImageOutcome(item, mapping[item.label])
        outcomes.append(outcome)
        try:
            try:
                decoded = safe_decode(item.path.read_bytes(), max_pixels)
            except ImageRejected as exc:
                outcome.reason = exc.message
                continue
            except OSError as exc:
                outcome.reason = f"could not be read ({exc.strerror or type(exc).__name__})"
                continue
            # analyse_anyway: the model is measured on every photo; the quality
            # verdict is recorded beside it rather than dropping the photo.
            result = analyse_image(decoded.image, app, run_registry, first.template_set.id, explain=False,
                                   use_adapter=False, analyse_anyway=True)
            outcome.quality_passed = result.quality.passed if result.quality is not None else None
            outcome.skin_tone_band = result.skin_tone.band if result.skin_tone is not None else None
            if not result.analysed:
                if result.scope is not None and result.scope.in_scope is False:
                    outcome.reason = result.scope.message
                    continue
                outcome.reason = " ".join(result.notes) or "not analysed"
                continue
            outcome.analysed = True
            outcome.located = result.detection is not None
            outcome.box = result.detection.box.as_list() if result.detection else None
            outcome.probabilities[first.key] = np.asarray(result.scores.probabilities, dtype=np.float64)
            if keep_embeddings:
                outcome.embedding = keeper.embedding()
            for arm in arms[1:]:
                if arm.classifier is not None:
                    scores = arm.classifier.classify(keeper.crop, arm.bank, arm.template_set)
                    outcome.probabilities[arm.key] = np.asarray(scores.probabilities, dtype=np.float64)
                    continue
                if arm.adapter is not None:
                    outcome.probabilities[arm.key] = adapter_probabilities(arm.adapter, keeper.embedding(), arm.bank)
                    continue
                scores = keeper.rescore(arm.bank, arm.template_set)
                outcome.probabilities[arm.key] = np.asarray(scores.probabilities, dtype=np.float64)
        finally:
            keeper.forget()
            progress()
    return outcomes


def adapter_probabilities(adapter: Adapter, embedding: np.ndarray, bank: PromptBank) -> np.ndarray:
    """The adapter's softmax laid out in bank order; conditions it does not score get 0 (it never predicts them)."""
    scores = adapter.scores(embedding[None, :])[0]
    row = np.zeros(len(bank.conditions), dtype=np.float64)
    column = {c.id: i for i, c in enumerate(bank.conditions)}
    for condition_id, probability in zip(scores.condition_ids, scores.probabilities):
        row[column[condition_id]] = probability
    return row
def scope_verdicts(files, app: ClinicalApp, registry: Registry, template_set_id: str, config: dict) -> dict:
    """How many pictures of an out-of-scope folder the scope gate turns away (and the colour check fails)."""
    rejected = not_judged = unreadable = colour_failed = 0
    rows = []
    for path in files:
        try:
            decoded = safe_decode(path.read_bytes(), config["MAX_IMAGE_PIXELS"])
        except (ImageRejected, OSError):
            unreadable += 1
            continue
        result = analyse_image(decoded.image, app, registry, template_set_id, explain=False, analyse_anyway=True,
                               demo=bool(config.get("DEMO_MODEL")))
        colour = next((c for c in (result.quality.checks if result.quality else ()) if c.name == "colour"), None)
        colour_failed += bool(colour is not None and not colour.passed)
        verdict = result.scope
        if verdict is None or verdict.in_scope is None:
            not_judged += 1
        elif verdict.in_scope is False:
            rejected += 1
        rows.append({"path": path.name, "in_scope": verdict.in_scope if verdict else None,
                     "score": verdict.score if verdict else None,
                     "colour_check_failed": bool(colour is not None and not colour.passed)})
    judged = len(rows) - not_judged
    return {
        "images": len(rows),
        "unreadable": unreadable,
        "rejected": rejected,
        "not_judged": not_judged,
        "rejection_rate": rejected / judged if judged else None,
        "colour_check_failed": colour_failed,
        "pictures": rows,
    }


# ----------------------------------------------------------------- metrics


@dataclass
class ArmScores:
    """The analysed images of one arm as arrays: what every metric is computed from."""

    classes: list[str]  # evaluated condition ids, bank order
    true: list[str]
    predicted: list[str]  # argmax over the bank (or over ``classes`` when restricted)
    confidence: np.ndarray  # probability of the prediction
    class_probabilities: dict[str, np.ndarray]  # per evaluated class, as ranked for AUROC
    bank_probabilities: dict[str, np.ndarray]  # per evaluated class, whole-bank softmax (what alerts use)
    high_risk_probability: np.ndarray  # sum over the bank's high-risk conditions
    high_risk_true: np.ndarray  # the true condition is high risk
    located: np.ndarray


def arm_scores(outcomes: Iterable[ImageOutcome], arm: Arm, classes: Sequence[str], restrict: bool) -> ArmScores:
    bank = arm.bank
    ids = [c.id for c in bank.conditions]
    column = {cid: i for i, cid in enumerate(ids)}
    wanted = [column[c] for c in classes]
    high_groups = set(bank.rules.high_risk_groups)
    high_columns = [i for i, c in enumerate(bank.conditions) if high_groups.intersection(c.groups)]
    high_ids = {ids[i] for i in high_columns}
    rows = [o for o in outcomes if o.analysed]
    probabilities = np.array([o.probabilities[arm.key] for o in rows], dtype=np.float64).reshape(len(rows), len(ids))
    if restrict:
        subset = probabilities[:, wanted]
        ranked = subset / subset.sum(axis=1, keepdims=True)
        choice = ranked.argmax(axis=1)  # first maximum: ties resolve in bank order, as the app's ranking
        predicted = [classes[i] for i in choice]
        confidence = ranked[np.arange(len(rows)), choice]
        class_probabilities = {c: ranked[:, k] for k, c in enumerate(classes)}
    else:
        choice = probabilities.argmax(axis=1)
        predicted = [ids[i] for i in choice]
        confidence = probabilities[np.arange(len(rows)), choice]
        class_probabilities = {c: probabilities[:, column[c]] for c in classes}
    return ArmScores(
        classes=list(classes),
        true=[o.condition for o in rows],
        predicted=predicted,
        confidence=confidence,
        class_probabilities=class_probabilities,
        bank_probabilities={c: probabilities[:, column[c]] for c in classes},
        high_risk_probability=probabilities[:, high_columns].sum(axis=1) if high_columns else np.zeros(len(rows)),
        high_risk_true=np.array([o.condition in high_ids for o in rows], dtype=bool),
        located=np.array([o.located for o in rows], dtype=bool),
    )


def subset(scores: ArmScores, keep: np.ndarray) -> ArmScores:
    """The same arrays for the images where ``keep`` is true (a subgroup or a split)."""
    keep = np.asarray(keep, dtype=bool)
    pick = lambda seq: [x for x, k in zip(seq, keep) if k]  # noqa: E731
    return ArmScores(
        classes=scores.classes,
        true=pick(scores.true),
        predicted=pick(scores.predicted),
        confidence=scores.confidence[keep],
        class_probabilities={c: p[keep] for c, p in scores.class_probabilities.items()},
        bank_probabilities={c: p[keep] for c, p in scores.bank_probabilities.items()},
        high_risk_probability=scores.high_risk_probability[keep],
        high_risk_true=scores.high_risk_true[keep],
        located=scores.located[keep],
    )


def compute_metrics(scores: ArmScores, bank: PromptBank, restrict: bool, ece_bins: int) -> dict:
    """Every figure of the report for one arm (or one subgroup of it), JSON-ready."""
    classes = scores.classes
    n = len(scores.true)
    correct = np.array([t == p for t, p in zip(scores.true, scores.predicted)], dtype=bool)
    aurocs = metrics.one_vs_rest_auroc(scores.class_probabilities, scores.true)
    per_class = {}
    for condition_id in classes:
        rates = metrics.one_vs_rest_rates(scores.true, scores.predicted, condition_id)
        threshold = bank.condition(condition_id).alert_threshold
        alert = metrics.rates_at_threshold(
            scores.bank_probabilities[condition_id], [t == condition_id for t in scores.true], threshold
        )
        per_class[condition_id] = {
            "label": bank.condition(condition_id).label,
            "n": rates.positives,
            "sensitivity": rates.sensitivity,
            "sensitivity_ci95": metrics.wilson_interval(rates.true_positives, rates.positives),
            "specificity": rates.specificity,
            "specificity_ci95": metrics.wilson_interval(rates.true_negatives, rates.negatives),
            "auroc": aurocs[condition_id],
            "alert_threshold": threshold,
            "alert_sensitivity": alert.sensitivity,
            "alert_specificity": alert.specificity,
        }
    matrix = metrics.confusion_matrix(scores.true, scores.predicted, classes, other=None if restrict else OTHER)
    others: dict[str, int] = {}
    for p in scores.predicted:
        if p not in classes:
            others[p] = others.get(p, 0) + 1
    bins = metrics.reliability_bins(scores.confidence, correct, ece_bins)
    return {
        "n": n,
        "accuracy": metrics.accuracy(scores.true, scores.predicted),
        "balanced_accuracy": metrics.balanced_accuracy(scores.true, scores.predicted, classes),
        "melanoma_vs_rest_auroc": aurocs.get("melanoma") if "melanoma" in classes else None,
        "high_risk_vs_rest_auroc": metrics.auroc(scores.high_risk_probability, scores.high_risk_true),
        "macro_auroc": metrics.macro_average(aurocs),
        "ece": metrics.expected_calibration_error(scores.confidence, correct, ece_bins),
        "not_located": int((~scores.located).sum()),
        "per_class": per_class,
        "confusion_matrix": {
            "true": list(classes),
            "predicted": list(classes) + ([] if restrict else [OTHER]),
            "counts": matrix.tolist(),
        },
        "other_predictions": dict(sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reliability": [dataclasses.asdict(b) for b in bins],
    }


def compare_arms(first: ArmScores, second: ArmScores) -> dict:
    """Paired comparison on the same images: who is right where the other is wrong."""
    a = np.array([t == p for t, p in zip(first.true, first.predicted)], dtype=bool)
    b = np.array([t == p for t, p in zip(second.true, second.predicted)], dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return {
        "both_correct": int(np.sum(a & b)),
        "only_first_correct": only_a,
        "only_second_correct": only_b,
        "both_wrong": int(np.sum(~a & ~b)),
        "same_prediction": int(sum(x == y for x, y in zip(first.predicted, second.predicted))),
        "mcnemar_exact_p": metrics.mcnemar_exact_p(only_a, only_b),
    }
