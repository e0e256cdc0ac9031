"""A third-party-style plugin used by the tests: a second clinical app made of parts the core already has.

It proves that a plugin can add a modality through hooks alone: a bank of its
own (parsed from a string), a detector of its own
(the whole image), and the MedSigLIP classifier and explainer by name.
"""

from __future__ import annotations

import tomllib

from PIL import Image

from webapp import hookimpl
from webapp.interfaces import Box, ClinicalApp, Detection
from webapp.prompt_bank import parse_prompt_bank

BANK = """
name = "echo"
title = "Echo test modality"
group_tags = ["normal", "abnormal"]
[rules]
high_risk_groups = ["abnormal"]
[template_sets.plain]
label = "Plain picture"
templates = ["a picture of {}.", "an image showing {}."]
[[conditions]]
id = "round"
label = "Round thing"
groups = ["abnormal"]
descriptions = ["a round thing"]
[[conditions]]
id = "square"
label = "Square thing"
groups = ["normal"]
descriptions = ["a square thing"]
"""


class CentreDetector:
    """Says the finding is the central half of the picture: simple, deterministic."""

    name = "echo-centre"

    def locate(self, image: Image.Image) -> Detection:
        w, h = image.size
        return Detection(Box(w // 4, h // 4, 3 * w // 4, 3 * h // 4), 1.0, "centre")


@hookimpl
def register_clinical_apps(config):
    return [ClinicalApp("echo", "Echo", bank="echo", classifier="medsiglip", explainer="medsiglip-gradcam",
                        detector="echo-centre", subject="thing")]


@hookimpl
def register_prompt_banks(config):
    return [parse_prompt_bank(tomllib.loads(BANK), source="echo")]


@hookimpl
def register_detectors(config):
    return [CentreDetector()]


@hookimpl
def register_classifiers(config):
    return []


@hookimpl
def register_explainers(config):
    return []
