"""Dermatology, the default clinical app: skin photos, a lesion localizer, the skin-condition bank.

It brings no model of its own: classification and heatmaps come from the
MedSigLIP plugin, named in the ClinicalApp record below.
"""

from __future__ import annotations

from webapp import hookimpl
from webapp.i18n import N_
from webapp.interfaces import ClinicalApp
from webapp.prompt_bank import load_prompt_bank
from webapp.resources import shipped_folder

PROMPTS = shipped_folder("prompts")  # the checkout's prompts/, or the installed copy


@hookimpl
def register_clinical_apps(config):
    return [
        ClinicalApp(
            name="dermatology",
            title=N_("Skin (dermatology)"),
            bank="dermatology",
            classifier="medsiglip",
            explainer="medsiglip-gradcam",
            detector="yolo" if config.get("LESION_WEIGHTS") else "classical",
            subject=N_("lesion"),
            disclaimer=N_(
                "PrivaScan is a triage aid, not a diagnosis. It can miss cancers and can raise false alarms, "
                "and it was mostly trained on lighter skin. Have a doctor or dermatologist look at any spot that "
                "is new, changing, bleeding, itching or that worries you."
            ),
        )
    ]


@hookimpl
def register_prompt_banks(config):
    return [load_prompt_bank(PROMPTS / "dermatology.toml")]


@hookimpl
def register_detectors(config):
    from .localizer import ClassicalLesionLocalizer

    detectors = [ClassicalLesionLocalizer()]
    if config.get("LESION_WEIGHTS"):
        from .yolo_detector import YoloLesionDetector

        detectors.append(YoloLesionDetector(config["LESION_WEIGHTS"]))
    return detectors


@hookimpl
def register_commands(subparsers):
    """``privascan train-detector``: train the YOLO lesion localizer from segmentation masks."""
    from .train_detector_command import add_parser

    add_parser(subparsers)
