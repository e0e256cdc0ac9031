"""The small typed contracts between the core and its plugins.

Plugins return objects that satisfy these protocols from their ``register_*``
hooks; nothing under ``webapp/`` imports a plugin module (tests/test_plugins.py
guards it). Everything a plugin hands back to the core is a plain dataclass so
it can be rendered, tested and kept in a session without knowing which plugin
made it. Optional capabilities (loading at start-up, preparing a bank's text
side, releasing the text tower) are protocols of their own, checked with
``isinstance``, so a plugin says what it can do by having the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from .i18n import N_
from .quality import QualityLimits


class ModelUnavailable(Exception):
    """A model cannot be loaded; ``reason`` is shown to the user with ``advice``."""

    def __init__(self, reason: str, advice: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.advice = advice


@dataclass(frozen=True)
class Box:
    """A rectangle in original-image pixels, x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def iou(self, other: "Box") -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Detection:
    """Where a detector thinks the finding is, how sure it is and how it knew."""

    box: Box
    confidence: float
    method: str


@runtime_checkable
class LoadsAtStartup(Protocol):
    """Optional for detectors and explainers (required of classifiers): heavy imports and weights,
    loaded by the model manager's background thread at start-up, never while a photo is handled."""

    def load(self) -> None:
        """Load; a classifier raises ModelUnavailable with a reason a user can act on."""


@runtime_checkable
class PreparesBanks(Protocol):
    """A classifier that computes a bank's text side once (at start-up), before any photo."""

    def prepare(self, bank: "PromptBank", template_set: "TemplateSet") -> None:
        """Compute and keep what scoring against this bank and template set needs."""


@runtime_checkable
class ExpectsBanks(Protocol):
    """A classifier that can start from stored bank embeddings when told, before ``load``, what it will serve."""

    def expect_banks(self, pairs: "Sequence[tuple[PromptBank, TemplateSet]]") -> None:
        """The (bank, template set) pairs start-up will prepare; all of them stored: no text tower is loaded."""


@runtime_checkable
class ReleasesTextTower(Protocol):
    """A classifier that can free its text encoder once every bank is prepared."""

    def release_text_tower(self) -> None:
        """Drop the text weights; requests run the vision side only."""


@runtime_checkable
class Detector(Protocol):
    name: str

    def locate(self, image: Image.Image) -> Detection | None:
        """Return the most plausible finding in an RGB image, or None."""


@dataclass(frozen=True)
class Condition:
    """One entry of a prompt bank: what it is, how to describe it, how to explain it."""

    id: str
    label: str
    groups: tuple[str, ...]
    descriptions: tuple[str, ...]
    snomed_ct: str = ""
    icd10: str = ""
    summary: str = ""
    alert_threshold: float = 0.5
    # The bank's own translations: language code -> {"label": ..., "summary": ...} (webapp/bank_i18n.py).
    translations: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class TemplateSet:
    """Prompt templates for one kind of picture ("clinical photo", "dermoscopy")."""

    id: str
    label: str
    templates: tuple[str, ...]
    translations: dict = field(default_factory=dict, compare=False, repr=False)  # code -> {"label": ...}


@dataclass(frozen=True)
class ConfidenceLevel:
    min_margin: float
    label: str


@dataclass(frozen=True)
class InterpretationRules:
    """Bank-specific rules read by the generic interpreter in ``webapp.interpret``."""

    # The defaults are generic; each bank names its own groups (``[rules]`` in its TOML).
    # Groups whose probabilities are consolidated and that make a headline high risk.
    high_risk_groups: tuple[str, ...] = ()
    # Groups that raise the risk to "moderate" when they are the headline.
    watch_groups: tuple[str, ...] = ()
    # Shannon entropy (bits) above which the ranking is flagged unreliable.
    entropy_limit_bits: float = 2.5
    # A high-risk/other mix closer than this is reported as "not clear".
    unclear_margin: float = 0.05
    # Margin thresholds, highest first; below the last one the label is ``fallback``.
    confidence_levels: tuple[ConfidenceLevel, ...] = (
        ConfidenceLevel(0.40, "confident"),
        ConfidenceLevel(0.20, "plausible"),
        ConfidenceLevel(0.10, "low confidence"),
    )
    fallback_confidence: str = "unclear"
    # code -> {English confidence label: translated label}; the words only, the bands stay the same.
    translations: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ScopeRules:
    """What a modality's pictures are, in words the image embedding is scored against (the scope gate)."""

    subject: str = "picture"  # "a skin photo": ends the sentence "This does not look like ..."
    in_scope: tuple[str, ...] = ()  # prompts for pictures the bank is made for
    out_of_scope: tuple[str, ...] = ()  # prompts for everything else a user might send
    min_score: float = 0.5  # in-scope share of the scope softmax needed to analyse
    translations: dict = field(default_factory=dict, compare=False, repr=False)  # code -> {"subject": ...}

    @property
    def enabled(self) -> bool:
        return bool(self.in_scope and self.out_of_scope)

    @property
    def prompts(self) -> tuple[str, ...]:
        return (*self.in_scope, *self.out_of_scope)


@dataclass(frozen=True)
class TierRule:
    """One triage tier: the headline a result gets when its risk is one of ``risks``."""

    id: str  # refer_urgently, refer, monitor, ...: stable, used by the API and exports
    label: str  # "Refer urgently"
    meaning: str  # what the tier asks of the reader, in plain words
    risks: tuple[str, ...]  # interpreter risks ("high", "moderate", "low", "unclear") it applies to
    min_high_risk_probability: float = 0.0  # and the high-risk groups together score at least this
    requires_reliable: bool = False  # and the ranking's entropy is within the limit
    translations: dict = field(default_factory=dict, compare=False, repr=False)  # code -> {"label", "meaning"}


CANT_ASSESS = "cant_assess"


@dataclass(frozen=True)
class TriageRules:
    """How results become tier headlines, and when condition advice may be shown."""

    tiers: tuple[TierRule, ...] = ()  # first match wins; the last should catch every risk
    cant_assess_label: str = "Can't assess"
    cant_assess_meaning: str = "The picture cannot be judged; follow the retake advice or see a clinician."
    # Confidence labels (from the rules' bands) at which a condition's summary may be shown.
    advice_confidence: tuple[str, ...] = ("confident", "plausible")
    # Individual Typology Angle bands that get a caution (dermatology); empty: no skin-tone estimate.
    skin_tone_caution_bands: tuple[str, ...] = ()
    skin_tone_caution: str = ""
    # code -> {"cant_assess_label", "cant_assess_meaning", "skin_tone_caution"}
    translations: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class PromptBank:
    """A modality's described conditions, its template sets and its rules."""

    name: str
    title: str
    conditions: tuple[Condition, ...]
    template_sets: tuple[TemplateSet, ...]
    rules: InterpretationRules = field(default_factory=InterpretationRules)
    # Every group tag the conditions and rules may use, declared by the bank.
    group_tags: tuple[str, ...] = ()
    content_hash: str = ""
    quality: QualityLimits = field(default_factory=QualityLimits)
    scope: ScopeRules = field(default_factory=ScopeRules)
    triage: TriageRules = field(default_factory=TriageRules)
    # Softmax temperature fitted on a clinic's labelled set (``privascan eval
    # --fit-calibration``, kept in the overrides file); None: uncalibrated.
    temperature: float | None = None
    translations: dict = field(default_factory=dict, compare=False, repr=False)  # code -> {"title": ...}
    language: str = field(default="en", compare=False)  # the language of its words: "en" as written, another once localized

    def condition(self, condition_id: str) -> Condition:
        for condition in self.conditions:
            if condition.id == condition_id:
                return condition
        raise KeyError(condition_id)

    def template_set(self, template_set_id: str | None = None) -> TemplateSet:
        if template_set_id is None:
            return self.template_sets[0]
        for template_set in self.template_sets:
            if template_set.id == template_set_id:
                return template_set
        raise KeyError(template_set_id)

    def prompts_for(self, condition: Condition, template_set: TemplateSet) -> list[str]:
        """Every template filled with every description: the prompt ensemble of one class."""
        return [t.format(d) for t in template_set.templates for d in condition.descriptions]


@dataclass
class Scores:
    """One image scored against one bank: a row per condition, in bank order."""

    condition_ids: list[str]
    logits: np.ndarray
    probabilities: np.ndarray  # softmax over the bank
    similarities: np.ndarray  # raw cosine similarities
    # The image's own unit-norm embedding from the same vision pass (float32), kept with
    # the result so lesions can be matched across photos (webapp/lesions.py); None when
    # the classifier does not expose one.
    embedding: np.ndarray | None = None
    # Softmax over the bank's scope prompts (``bank.scope.prompts`` order), from
    # the same image embedding; None when the bank or classifier has no scope gate.
    scope_probabilities: np.ndarray | None = None


@dataclass
class Explanation:
    """A heatmap (HxW floats in [0, 1]) for one condition, with the scores of the same pass."""

    scores: Scores
    condition_id: str
    heatmap: np.ndarray
    # With an adapter: the zero-shot scores of the same pass, so the adapter can be switched off for comparison.
    zero_shot_scores: Scores | None = None


@runtime_checkable
class Classifier(Protocol):
    name: str
    input_size: int  # the side of the square crop it scores, in pixels

    def load(self) -> None:
        """Load weights; raise ModelUnavailable with a reason a user can act on."""

    def describe(self) -> str:
        """A one-line, user-facing description of what is loaded."""

    def classify(self, crop: Image.Image, bank: PromptBank, template_set: TemplateSet) -> Scores:
        """Score a square crop against every condition of the bank."""


@runtime_checkable
class EmbedsCrops(Protocol):
    """Optional for classifiers: the image embedding and the scoring as two steps.

    One ``embed_crops`` call over several crops is one batched vision forward
    (live frames of several sessions; an adapter reads the embeddings), and
    ``scores_from_embeddings`` scores rows of it against any bank without a
    second pass. A classifier without them is asked ``classify`` crop by crop.
    """

    def embed_crops(self, crops: Sequence[Image.Image]):
        """Image embeddings (one row per crop, in order) from one forward pass."""

    def scores_from_embeddings(self, image_features, bank: PromptBank, template_set: TemplateSet) -> list[Scores]:
        """Scores of each embedding row against the bank's conditions (no vision pass)."""


@runtime_checkable
class Explainer(Protocol):
    name: str
    explains: str  # the name of the classifier whose scores it explains (checked at start-up)

    def explain(
        self,
        classifier: Classifier,
        crop: Image.Image,
        bank: PromptBank,
        template_set: TemplateSet,
        condition_id: str | None = None,
    ) -> Explanation:
        """Classify and explain in one pass; ``None`` targets that pass's top condition."""


@dataclass(frozen=True)
class ClinicalApp:
    """A modality: which bank, detector, classifier and explainer make it, and its wording."""

    name: str
    title: str
    bank: str
    classifier: str
    explainer: str | None = None
    detector: str | None = None
    subject: str = N_("finding")  # what the detector looks for, in words ("lesion"); marked, translated where shown
    disclaimer: str = N_(
        "PrivaScan is a triage aid, not a diagnosis. Always have a qualified "
        "clinician examine anything that worries you."
    )
    # Jinja template that renders one result; plugins may ship their own.
    result_template: str = "partials/result.html"
