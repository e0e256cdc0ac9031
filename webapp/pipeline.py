"""Analyse one photo: locate, crop, classify (and explain) in one pass.

The pipeline knows the stages, not the models: it reaches the detector,
classifier and explainer only through the registry the plugins filled. It is
used by the inference worker, the JSON API and the benchmark alike, so the
figures the benchmark prints are those of the product's own path.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

from PIL import Image

from .cropping import square_crop
from .images import MIN_ANALYSABLE_SIDE, encode_jpeg
from .interfaces import Box, ClinicalApp, Detection, Scores
from .interpret import interpret
from .plugins import Registry
from .render import heatmap_overlay_png

CROP_SIZE = 448


@dataclass
class AnalysisResult:
    app_name: str
    template_set_id: str
    image_size: tuple[int, int]
    scores: Scores | None  # None when the photo could not be analysed
    detection: Detection | None
    crop_region: Box | None
    crop_jpeg: bytes = b""
    heatmap_png: bytes = b""
    heatmap_condition_id: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def analysed(self) -> bool:
        return self.scores is not None

    @property
    def size_bytes(self) -> int:
        return len(self.crop_jpeg) + len(self.heatmap_png)


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
    app: ClinicalApp,
    registry: Registry,
    template_set_id: str | None = None,
    explain: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> AnalysisResult:
    bank = registry.banks[app.bank]
    template_set = bank.template_set(template_set_id if template_set_id in {t.id for t in bank.template_sets} else None)
    clock = Stopwatch(on_stage)
    result = AnalysisResult(app.name, template_set.id, image.size, None, None, None)

    if min(image.size) < MIN_ANALYSABLE_SIDE:
        result.notes.append(
            f"This photo is only {image.width}x{image.height} pixels; at least {MIN_ANALYSABLE_SIDE} pixels "
            "per side are needed to analyse it. Please take a closer, sharper photo."
        )
        return result

    detection = None
    if app.detector:
        with clock.stage("localize", f"finding the {app.subject}"):
            detection = registry.detectors[app.detector].locate(image)
        if detection is None:
            result.notes.append(
                f"No {app.subject} could be located, so the whole photo was analysed. "
                "Treat this result with extra caution: it may not describe any particular spot."
            )
    result.detection = detection

    with clock.stage("crop", "cropping"):
        crop, region = square_crop(image, detection.box if detection else None, size=CROP_SIZE)
    result.crop_region = region

    classifier = registry.classifiers[app.classifier]
    explainer = registry.explainers.get(app.explainer) if (explain and app.explainer) else None
    if explainer is not None:
        with clock.stage("classify_and_explain", "classifying and explaining"):
            explanation = explainer.explain(classifier, crop, bank, template_set, None)
        result.scores = explanation.scores
        result.heatmap_condition_id = explanation.condition_id
        with clock.stage("render", "drawing the heatmap"):
            result.heatmap_png = heatmap_overlay_png(crop, explanation.heatmap)
    else:
        with clock.stage("classify", "classifying"):
            result.scores = classifier.classify(crop, bank, template_set)

    with clock.stage("encode", "finishing"):
        result.crop_jpeg = encode_jpeg(crop, quality=90)
    result.timings = clock.timings
    return result


def explain_condition(
    image: Image.Image, result: AnalysisResult, condition_id: str, app: ClinicalApp, registry: Registry
) -> bytes:
    """A heatmap for another condition, on exactly the crop the result was computed on."""
    bank = registry.banks[app.bank]
    template_set = bank.template_set(result.template_set_id)
    crop, _ = square_crop(image, result.detection.box if result.detection else None, size=CROP_SIZE)
    explainer = registry.explainers[app.explainer]
    explanation = explainer.explain(registry.classifiers[app.classifier], crop, bank, template_set, condition_id)
    return heatmap_overlay_png(crop, explanation.heatmap)


def read(result: AnalysisResult, bank, rules=None):
    """Interpret a result's stored scores; a photo whose finding was not located never reads as confident."""
    reading = interpret(result.scores, bank, rules)
    if result.detection is None and result.notes:
        fallback = (rules or bank.rules).fallback_confidence
        reading = dataclasses.replace(
            reading,
            confidence=fallback,
            steps=[*reading.steps, f"Nothing was located in the photo, so the confidence is reported as '{fallback}'."],
        )
    return reading
