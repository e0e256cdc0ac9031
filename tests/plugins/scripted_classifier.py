"""A test classifier plugin whose scores a test chooses: the gates' logic is tested with them.

The tiny random MedSigLIP cannot tell skin from an X-ray, so tests of the
scope gate and the triage tiers use this classifier instead, through the same
plugin hooks and pipeline as the real one. It scores an image by what a test
put in ``SCRIPT`` (condition id -> probability; uniform when empty) and its
scope by the picture's colour: a picture whose colour is what the bank's
quality limits ask for (colourful for skin, grey for a chest X-ray) gets the
in-scope share ``IN_SCOPE_MATCH``, any other ``IN_SCOPE_OTHER`` (shares of the
scope softmax, spread evenly over the bank's in-scope and out-of-scope prompts).
Every classified crop's size is recorded, so a test can check what the
classifier was given.
"""

from __future__ import annotations

import numpy as np

from webapp import hookimpl
from webapp.interfaces import ClinicalApp, PromptBank, Scores, TemplateSet
from webapp.quality import colourfulness

SCRIPT: dict[str, float] = {}
IN_SCOPE_MATCH = 0.9
IN_SCOPE_OTHER = 0.1
SEEN: list[tuple[int, int]] = []


def reset() -> None:
    global IN_SCOPE_MATCH, IN_SCOPE_OTHER
    SCRIPT.clear()
    SEEN.clear()
    IN_SCOPE_MATCH, IN_SCOPE_OTHER = 0.9, 0.1


class ScriptedClassifier:
    name = "scripted"
    input_size = 448

    def load(self) -> None:
        return None

    def describe(self) -> str:
        return "Scripted test classifier"

    def prepare(self, bank, template_set) -> None:
        return None

    def classify(self, crop, bank: PromptBank, template_set: TemplateSet) -> Scores:
        SEEN.append(crop.size)
        ids = [condition.id for condition in bank.conditions]
        if SCRIPT:
            probabilities = np.array([SCRIPT.get(cid, 0.0) for cid in ids], dtype=np.float64)
        else:
            probabilities = np.ones(len(ids), dtype=np.float64)
        probabilities = probabilities / probabilities.sum()
        logits = np.log(np.clip(probabilities, 1e-12, None))
        scores = Scores(ids, logits, probabilities, np.zeros(len(ids)))
        if bank.scope.enabled:
            colourful = colourfulness(crop) >= 4.0
            share = IN_SCOPE_MATCH if colourful == (bank.quality.colour != "greyscale") else IN_SCOPE_OTHER
            n_in, n_out = len(bank.scope.in_scope), len(bank.scope.out_of_scope)
            scores.scope_probabilities = np.array([share / n_in] * n_in + [(1 - share) / n_out] * n_out)
        return scores


@hookimpl
def register_clinical_apps(config):
    return [
        ClinicalApp("scripted", "Scripted skin", bank="dermatology", classifier="scripted",
                    detector="classical", subject="lesion"),
        ClinicalApp("scripted_chest", "Scripted chest X-ray", bank="chest_xray", classifier="scripted",
                    subject="finding"),
    ]


@hookimpl
def register_classifiers(config):
    return [ScriptedClassifier()]
