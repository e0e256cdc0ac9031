"""Every image stage: locate, crop, classify (and explain), for photos and live frames.

The pipeline knows the stages, not the models: it reaches the detector,
classifier and explainer only through the registry the plugins filled. It is
used by the inference worker (photos, API images, live frames, extra
heatmaps), the command line and the benchmark alike, so the figures the
benchmark prints are those of the product's own path. Views never run a
stage themselves: they hand one of these functions to ``webapp.jobs``.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flask_babel import gettext
from PIL import Image

from .calibration import calibrated_scores
from .cropping import square_crop
from .i18n import N_, Message
from .images import MIN_ANALYSABLE_SIDE, encode_jpeg, open_clean
from .interfaces import CANT_ASSESS, Box, ClinicalApp, Detection, EmbedsCrops, PromptBank, Scores, TemplateSet
from .interpret import Triage, interpret, triage
from .plugins import Registry
from .quality import QualityReport, assess_quality
from .render import heatmap_overlay_png
from .scope import ScopeVerdict, judge_scope
from .skin_tone import SkinTone, estimate_skin_tone


# The stages' names in the timings table (their ids are the timings' keys).
STAGE_NAMES = {
    "localize": N_("localize"), "crop": N_("crop"), "quality": N_("quality"), "encode": N_("encode"),
    "classify": N_("classify"), "classify_and_explain": N_("classify and explain"), "adapter": N_("adapter"),
    "render": N_("render"), "decode": N_("decode"), "waiting": N_("waiting"), "server": N_("server"),
}


def stage_name(stage: str) -> str:
    return gettext(STAGE_NAMES[stage]) if stage in STAGE_NAMES else stage.replace("_", " ")


def resolve_template_set(bank: PromptBank, template_set_id: str | None) -> TemplateSet:
    """The bank's template set of that id; its default for None or an id it does not have
    (a session's choice made under another modality)."""
    known = {template_set.id for template_set in bank.template_sets}
    return bank.template_set(template_set_id if template_set_id in known else None)


def crop_size(clinical_app: ClinicalApp, registry: Registry) -> int:
    """The side of the square the classifier sees (its ``input_size``)."""
    return int(registry.classifiers[clinical_app.classifier].input_size)


def heatmap_allowance(side: int) -> int:
    """The most bytes one heatmap overlay PNG of a ``side`` crop takes (raw RGB plus PNG's framing)."""
    return side * side * 3 + 64 * 1024


def result_allowance(side: int) -> int:
    """Room a photo's result is given in the caps before it is computed: heatmap, crop JPEG, embedding."""
    return heatmap_allowance(side) + side * side * 3 // 2 + 64 * 1024


@dataclass
class AnalysisResult:
    app_name: str
    template_set_id: str
    image_size: tuple[int, int]
    scores: Scores | None  # None when the photo could not be analysed
    detection: Detection | None
    crop_region: Box | None
    # The detector that ran (None: the modality has none, or the photo was too small to try).
    detector_name: str | None = None
    crop_jpeg: bytes = b""
    heatmap_png: bytes = b""
    heatmap_condition_id: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The clinic's adapter that produced ``scores`` (its ``Adapter.as_dict()``), or None for zero-shot;
    # with one, ``zero_shot_scores`` are the same embedding's zero-shot scores, for comparison.
    adapter: dict | None = None
    zero_shot_scores: Scores | None = None
    # The gates (issue 12), plain fields so pages, the API, reports and exports read them alike.
    quality: QualityReport | None = None  # None: not run (photo too small to measure)
    scope: ScopeVerdict | None = None  # None: no classification ran
    skin_tone: SkinTone | None = None  # dermatology only, when there was skin to measure
    low_quality: bool = False  # analysed although the quality gate failed ("Analyse anyway")
    calibrated: bool = False  # probabilities from the clinic's fitted temperature
    triage: Triage | None = None  # the headline tier under the bank's own rules
    # Every analysis's own picture URLs: a new version per run, so a browser
    # never shows the previous run's cached crop or heatmap beside new text.
    version: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def analysed(self) -> bool:
        return self.scores is not None

    def scores_for(self, use_adapter: bool = True) -> Scores | None:
        """The adapter's scores, or (``use_adapter=False``) the zero-shot ones of the same pass."""
        if not use_adapter and self.zero_shot_scores is not None:
            return self.zero_shot_scores
        return self.scores

    def adapter_used(self, use_adapter: bool = True) -> dict | None:
        """The adapter that scored what ``scores_for(use_adapter)`` returns, or None (zero-shot)."""
        return self.adapter if use_adapter else None

    @property
    def assessable(self) -> bool:
        return self.triage is not None and self.triage.assessable

    @property
    def tier(self) -> str:
        return self.triage.tier if self.triage is not None else CANT_ASSESS

    @property
    def nothing_located(self) -> bool:
        """A detector ran and found nothing, so the whole photo was classified."""
        return self.detector_name is not None and self.detection is None

    @property
    def size_bytes(self) -> int:
        embedding = self.scores.embedding if self.scores is not None else None
        return len(self.crop_jpeg) + len(self.heatmap_png) + (embedding.nbytes if embedding is not None else 0)


class Stopwatch:
    """Collects per-stage seconds and tells the card which stage is running."""

    def __init__(self, on_stage: Callable[[str], None] | None = None):
        self.timings: dict[str, float] = {}
        self._on_stage = on_stage or (lambda stage: None)

    def stage(self, name: str, label: str):
        stopwatch = self

        class _Stage:
            def __enter__(self):
                stopwatch._on_stage(label)
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                stopwatch.timings[name] = round(time.perf_counter() - self.started, 4)

        return _Stage()


def analyse_image(
    image: Image.Image,
    clinical_app: ClinicalApp,
    registry: Registry,
    template_set_id: str | None = None,
    explain: bool = True,
    on_stage: Callable[[str], None] | None = None,
    use_adapter: bool = True,
    analyse_anyway: bool = False,
    demo: bool = False,
) -> AnalysisResult:
    """One photo from pixels to scores (and a heatmap of the top condition when ``explain``).

    The quality gate runs before the forward pass: a failed gate returns a
    "Can't assess" result with its retake hints and no scores, unless
    ``analyse_anyway`` (then the result is marked low quality). The scope gate
    reads the same forward pass; out of scope, the scores are dropped.
    ``demo``: random weights, so the zero-shot scope gate cannot judge (the
    classifier also says so itself through ``judges_scope``). With a clinic's
    adapter installed for the bank (``registry.adapters``) and ``use_adapter``,
    the adapter scores the crop's embedding and the same pass's zero-shot
    scores are kept beside them.
    """
    gated = _locate_crop_and_gate(image, clinical_app, registry, template_set_id, on_stage, use_adapter, analyse_anyway)
    if isinstance(gated, AnalysisResult):
        return gated  # refused by a gate: nothing was classified
    result, clock, adapter = gated.result, gated.clock, gated.adapter
    classifier = registry.classifiers[clinical_app.classifier]
    explainer = registry.explainers.get(clinical_app.explainer) if (explain and clinical_app.explainer) else None
    if explainer is not None:
        with clock.stage("classify_and_explain", Message(N_("classifying and explaining"))):
            explanation = _explain(explainer, classifier, gated.crop, gated.bank, gated.template_set, None, adapter)
        result.scores = explanation.scores
        result.zero_shot_scores = explanation.zero_shot_scores
        if adapter is not None and result.zero_shot_scores is None:
            # An explainer that cannot explain an adapter: its heatmap and scores are zero-shot,
            # and the adapter scores the same crop from a second vision pass.
            result.zero_shot_scores = explanation.scores
            with clock.stage("adapter", Message(N_("scoring with the clinic's adapter"))):
                result.scores = _adapter_scores(classifier, gated.crop, adapter)
        result.heatmap_condition_id = explanation.condition_id
        with clock.stage("render", Message(N_("drawing the heatmap"))):
            result.heatmap_png = heatmap_overlay_png(gated.crop, explanation.heatmap)
    else:
        with clock.stage("classify", Message(N_("classifying"))):
            _classify_together(classifier, [gated])
    return _conclude(gated, classifier, demo)


@dataclass
class _Gated:
    """A picture past the gates, cropped and waiting for its classification."""

    result: AnalysisResult
    crop: Image.Image
    clock: Stopwatch
    bank: PromptBank
    template_set: TemplateSet
    adapter: object | None  # the clinic's adapter for the bank, when one scores it


def _locate_crop_and_gate(
    image: Image.Image, clinical_app: ClinicalApp, registry: Registry, template_set_id: str | None,
    on_stage: Callable[[str], None] | None, use_adapter: bool, analyse_anyway: bool,
) -> AnalysisResult | _Gated:
    """Every stage before the classifier: the finished "can't assess" result when a gate refuses the picture."""
    bank = registry.banks[clinical_app.bank]
    adapter = registry.adapters.get(bank.name) if use_adapter else None
    template_set = resolve_template_set(bank, template_set_id)
    clock = Stopwatch(on_stage)
    result = AnalysisResult(clinical_app.name, template_set.id, image.size, None, None, None)

    if min(image.size) < MIN_ANALYSABLE_SIDE:
        result.notes.append(Message(
            N_("This photo is only %(width)dx%(height)d pixels; at least %(minimum)d pixels per side are needed to "
               "analyse it. Please take a closer, sharper photo."),
            width=image.width, height=image.height, minimum=MIN_ANALYSABLE_SIDE,
        ))
        result.triage = triage(None, bank)
        result.triage.reasons = list(result.notes)
        return result

    # Sentences made here are Messages: the card shows them in its reader's language.
    subject = Message(clinical_app.subject)
    detection = None
    if clinical_app.detector:
        result.detector_name = clinical_app.detector
        with clock.stage("localize", Message(N_("finding the %(subject)s"), subject=subject)):
            detection = registry.detectors[clinical_app.detector].locate(image)
        if detection is None:
            result.notes.append(Message(
                N_("No %(subject)s could be located, so the whole photo was analysed. Treat this result with extra "
                   "caution: it may not describe any particular spot."), subject=subject,
            ))
    result.detection = detection

    input_size = crop_size(clinical_app, registry)
    with clock.stage("crop", Message(N_("cropping"))):
        crop, region = square_crop(image, detection.box if detection else None, size=input_size)
    result.crop_region = region

    with clock.stage("quality", Message(N_("checking the picture"))):
        result.quality, result.skin_tone = check_picture(image, bank, detection, region, input_size)
    if not result.quality.passed and not analyse_anyway:
        with clock.stage("encode", Message(N_("finishing"))):
            result.crop_jpeg = encode_jpeg(crop, quality=90)  # the card shows what was judged
        result.triage = triage(None, bank, result.quality)
        result.timings = clock.timings
        return result
    result.low_quality = not result.quality.passed
    return _Gated(result, crop, clock, bank, template_set, adapter)


def _classify_together(classifier, pictures: list[_Gated]) -> None:
    """Scores (and adapter scores) for pictures past the gates, from one vision forward over all their crops.

    A classifier that exposes its image embeddings (``EmbedsCrops``) embeds
    the crops as one batch and each picture is scored against its own bank
    and template set; any other classifier scores them one by one.
    """
    if not isinstance(classifier, EmbedsCrops):
        for picture in pictures:
            picture.result.scores = classifier.classify(picture.crop, picture.bank, picture.template_set)
        return
    features = classifier.embed_crops([picture.crop for picture in pictures])
    for index, picture in enumerate(pictures):
        row = features[index:index + 1]
        zero_shot = classifier.scores_from_embeddings(row, picture.bank, picture.template_set)[0]
        if picture.adapter is None:
            picture.result.scores = zero_shot
        else:
            picture.result.zero_shot_scores = zero_shot
            picture.result.scores = picture.adapter.scores(_numpy(row))[0]


def _conclude(gated: _Gated, classifier, demo: bool) -> AnalysisResult:
    """The stages after the classifier: scope gate, calibration, the crop's JPEG and the triage."""
    result, bank, clock = gated.result, gated.bank, gated.clock
    result.adapter = gated.adapter.as_dict() if gated.adapter is not None else None
    # Random weights (demo mode, the tests' tiny model) cannot judge scope.
    # The scope prompts are scored zero-shot on the same embedding (an adapter scores conditions only).
    result.scope = judge_scope(result.zero_shot_scores or result.scores, bank, demo=demo or not getattr(classifier, "judges_scope", True))
    if result.scope.in_scope is False:
        # No result for a picture this app is not made for: not even a heatmap.
        result.scores, result.heatmap_png, result.heatmap_condition_id = None, b"", ""
    elif bank.temperature is not None:
        result.scores = calibrated_scores(result.scores, bank.temperature)
        result.calibrated = True

    with clock.stage("encode", Message(N_("finishing"))):
        result.crop_jpeg = encode_jpeg(gated.crop, quality=90)
    if result.scores is not None:
        result.triage = read(result, bank).triage
    else:
        result.triage = triage(None, bank, result.quality, result.scope, analyse_anyway=result.low_quality)
    result.timings = clock.timings
    return result


def _explain(explainer, classifier, crop, bank, template_set, condition_id, adapter):
    """The explainer's pass, through the adapter when there is one and the explainer can follow it."""
    if adapter is not None and getattr(explainer, "supports_adapter", False):
        return explainer.explain(classifier, crop, bank, template_set, condition_id, adapter=adapter)
    return explainer.explain(classifier, crop, bank, template_set, condition_id)


def _numpy(features):
    return features.detach().to("cpu").double().numpy() if hasattr(features, "detach") else features


def _adapter_scores(classifier, crop, adapter) -> Scores:
    return adapter.scores(_numpy(classifier.embed_crops([crop])))[0]


def check_picture(
    image: Image.Image, bank, detection: Detection | None, region: Box, input_size: int
) -> tuple[QualityReport, SkinTone | None]:
    """The quality gate on the region the classifier will see, and the skin tone around the finding."""
    visible = (max(0, region.x0), max(0, region.y0), min(image.width, region.x1), min(image.height, region.y1))
    finding = detection.box.as_list() if detection else None
    report = assess_quality(image, bank.quality, region=visible, finding=finding, input_size=input_size)
    tone = None
    if bank.triage.skin_tone_caution_bands:
        tone = estimate_skin_tone(image, finding, visible)
    return report, tone


@dataclass
class Heatmap:
    """An extra heatmap: the overlay PNG, the condition it explains and that condition's probability."""

    png: bytes
    condition_id: str
    probability: float


def explain_crop(
    crop: Image.Image,
    template_set_id: str | None,
    condition_id: str | None,
    clinical_app: ClinicalApp,
    registry: Registry,
    use_adapter: bool = True,
) -> Heatmap:
    """Grad-CAM on exactly this crop for ``condition_id`` (None: the top condition of the same pass).

    The clinic's adapter's logit is explained when one is installed, ``use_adapter``
    and it scores that condition; otherwise the zero-shot logit.
    """
    bank = registry.banks[clinical_app.bank]
    explainer = registry.explainers[clinical_app.explainer]
    adapter = registry.adapters.get(bank.name) if use_adapter else None
    if adapter is not None and condition_id is not None and condition_id not in adapter.conditions:
        adapter = None
    explanation = _explain(
        explainer, registry.classifiers[clinical_app.classifier], crop, bank,
        resolve_template_set(bank, template_set_id), condition_id, adapter,
    )
    scores = explanation.scores
    probability = float(scores.probabilities[scores.condition_ids.index(explanation.condition_id)])
    return Heatmap(heatmap_overlay_png(crop, explanation.heatmap), explanation.condition_id, probability)


def explain_condition(
    image: Image.Image, result: AnalysisResult, condition_id: str, clinical_app: ClinicalApp, registry: Registry,
    use_adapter: bool = True,
) -> Heatmap:
    """A heatmap for another condition of a photo's result, on exactly the crop the result was computed on."""
    crop, _ = square_crop(image, result.detection.box if result.detection else None, size=crop_size(clinical_app, registry))
    return explain_crop(crop, result.template_set_id, condition_id, clinical_app, registry, use_adapter=use_adapter and result.adapter is not None)


@dataclass
class FrameAnalysis:
    """One live frame's analysis: what was in view, and the scores and crop when a finding was."""

    result: AnalysisResult
    # "finding", "nothing" (the detector found nothing), "too-small", or
    # "cant-assess" (a gate refused the frame: too dark, blurred, out of scope)
    view: str
    started: float  # perf_counter when the worker began it (the frame's wait is measured against it)
    batch_size: int = 1  # frames (of any sessions) classified in the same vision forward; 0: refused before it

    @property
    def reasons(self) -> list[str]:
        """Why a frame was not assessed (retake hints or the scope message), for the live panel."""
        return list(self.result.triage.reasons) if self.result.triage is not None else []

    @property
    def probabilities(self) -> dict[str, float] | None:
        """Condition id -> probability, only when a finding was in view."""
        if self.view != "finding":
            return None
        return dict(zip(self.result.scores.condition_ids, map(float, self.result.scores.probabilities)))

    @property
    def crop_jpeg(self) -> bytes:
        return self.result.crop_jpeg if self.view == "finding" else b""


def analyse_frame(
    image: Image.Image, template_set_id: str | None, clinical_app: ClinicalApp, registry: Registry
) -> FrameAnalysis:
    """A live camera frame: locate, crop and classify, no heatmap (that is asked for separately)."""
    return analyse_frames([(image, template_set_id)], clinical_app, registry)[0]


def analyse_frames(
    frames: Sequence[tuple[Image.Image, str | None]], clinical_app: ClinicalApp, registry: Registry
) -> list[FrameAnalysis]:
    """Live frames of one clinical app, from any sessions (frame, picture kind): one vision forward for them all.

    Each frame goes through the same gates as a photo: a dark or blurred
    frame is not classified, so it can raise no alert, and the panel says
    why. The frames that pass are classified together (on a GPU a batch of
    eight costs little more than one frame; the worker batches frames only
    where that pays, see ``webapp.jobs.live_batch_limit``); the classify
    time each frame reports is the batch's.
    """
    started = time.perf_counter()
    gated = [_locate_crop_and_gate(image, clinical_app, registry, template_set_id, None, True, False)
             for image, template_set_id in frames]
    waiting = [picture for picture in gated if isinstance(picture, _Gated)]
    classifier = registry.classifiers[clinical_app.classifier]
    if waiting:
        classify_started = time.perf_counter()
        _classify_together(classifier, waiting)
        seconds = round(time.perf_counter() - classify_started, 4)
        for picture in waiting:
            picture.clock.timings["classify"] = seconds
    results = [picture if isinstance(picture, AnalysisResult) else _conclude(picture, classifier, demo=False)
               for picture in gated]
    classified = {id(picture.result) for picture in waiting}
    return [FrameAnalysis(result, _view(result), started, batch_size=len(waiting) if id(result) in classified else 0)
            for result in results]


def _view(result: AnalysisResult) -> str:
    if result.nothing_located:
        return "nothing"  # said first: pointing the camera at the spot is the first thing to fix
    if not result.analysed:
        return "too-small" if result.quality is None else "cant-assess"
    return "finding"


def explain_jpeg_crop(
    crop_jpeg: bytes, template_set_id: str | None, condition_id: str | None, clinical_app: ClinicalApp, registry: Registry
) -> Heatmap:
    """``explain_crop`` for a crop kept as JPEG bytes (a live frame's last crop)."""
    return explain_crop(open_clean(crop_jpeg), template_set_id, condition_id, clinical_app, registry)


def read(result: AnalysisResult, bank, rules=None, use_adapter: bool = True):
    """Interpret a result's stored scores; a photo whose finding was not located never reads as confident.

    The reading carries the triage (tier, whether advice may be shown) under
    the same rules, so the debug panel's changed rules change the tier too.
    ``use_adapter=False`` reads the zero-shot scores of the same pass (the debug panel's switch).
    """
    reading = _read_scores(result, bank, rules, use_adapter)
    verdict = triage(reading, bank, result.quality, result.scope, analyse_anyway=result.low_quality)
    return dataclasses.replace(reading, triage=verdict, steps=[*reading.steps, *verdict.steps])


def _read_scores(result: AnalysisResult, bank, rules=None, use_adapter: bool = True):
    reading = interpret(result.scores_for(use_adapter), bank, rules)
    if result.nothing_located:
        fallback = (rules or bank.rules).fallback_confidence
        reading = dataclasses.replace(
            reading,
            confidence=fallback,
            steps=[*reading.steps, gettext("Nothing was located in the photo, so the confidence is reported as "
                                           "'%(confidence)s'.", confidence=fallback)],
        )
    return reading
