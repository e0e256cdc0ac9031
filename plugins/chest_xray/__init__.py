"""Chest X-ray, the second built-in clinical app: a frontal radiograph against the chest-finding bank.

It proves the core knows no modality: no localizer (a radiograph is analysed
whole, padded to a square), the MedSigLIP classifier and Grad-CAM explainer
reused by name (MedSigLIP was trained on chest X-rays too), its own bank
(``prompts/chest_xray.toml``), and its own result wording, disclaimer and
stylesheet, shipped in this package's ``templates/`` and ``static/`` folders.
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
            name="chest_xray",
            title=N_("Chest X-ray"),
            bank="chest_xray",
            classifier="medsiglip",
            explainer="medsiglip-gradcam",
            detector=None,  # the whole radiograph, padded to a square
            subject=N_("finding"),
            disclaimer=N_(
                "PrivaScan is a triage aid, not a radiology report. Zero-shot matching of a chest X-ray against "
                "described findings can miss serious disease and can raise false alarms; it has not been validated "
                "for diagnosis. Every chest X-ray needs to be read by a radiologist or a qualified clinician, at once "
                "if the patient is breathless or has chest pain."
            ),
            result_template="chest_xray/result.html",
        )
    ]


@hookimpl
def register_prompt_banks(config):
    return [load_prompt_bank(PROMPTS / "chest_xray.toml")]
