"""A test modality with a deterministic classifier and detector, for fast tests of the core pipeline.

The classifier scores a crop by its mean redness (no model at all), so a test
knows the answer in advance; the detector finds the darkest quarter-sized
square, or nothing in a uniform picture. Both satisfy the same protocols as
the real plugins, so the pipeline cannot tell them apart.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from webapp import hookimpl
from webapp.interfaces import Box, ClinicalApp, Condition, Detection, PromptBank, Scores, TemplateSet

BANK = PromptBank(
    name="colour",
    title="Colour test bank",
    conditions=(
        Condition("red", "Red spot", ("malignant",), ("a red spot",)),
        Condition("other", "Other spot", ("benign",), ("another spot",)),
    ),
    template_sets=(TemplateSet("plain", "Plain", ("{}",)), TemplateSet("second", "Second", ("a picture of {}",))),
    content_hash="colour-1",
)


class RednessClassifier:
    name = "redness"
    input_size = 64  # small on purpose: the pipeline must crop to the classifier's size, not 448

    def __init__(self):
        self.seen_sizes: list[tuple[int, int]] = []

    def load(self) -> None:
        pass

    def describe(self) -> str:
        return "redness test classifier"

    def classify(self, crop: Image.Image, bank: PromptBank, template_set: TemplateSet) -> Scores:
        self.seen_sizes.append(crop.size)
        pixels = np.asarray(crop, dtype=np.float32) / 255.0
        redness = float(pixels[..., 0].mean() - pixels[..., 1:].mean())
        logits = np.array([redness * 10, -redness * 10], dtype=np.float32)
        probabilities = np.exp(logits) / np.exp(logits).sum()
        return Scores([c.id for c in bank.conditions], logits, probabilities, np.tanh(logits))


class DarkestSquareDetector:
    name = "darkest"

    def locate(self, image: Image.Image) -> Detection | None:
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        if grey.max() - grey.min() < 10:  # uniform: nothing to find
            return None
        y, x = (int(v) for v in np.unravel_index(np.argmin(grey), grey.shape))
        half = max(2, min(image.size) // 8)
        return Detection(Box(max(0, x - half), max(0, y - half), min(image.width, x + half), min(image.height, y + half)),
                         1.0, "darkest pixel")


@hookimpl
def register_clinical_apps(config):
    return [ClinicalApp("colour", "Colour test", bank="colour", classifier="redness", detector="darkest", subject="spot")]


@hookimpl
def register_prompt_banks(config):
    return [BANK]


@hookimpl
def register_detectors(config):
    return [DarkestSquareDetector()]


@hookimpl
def register_classifiers(config):
    return [RednessClassifier()]
