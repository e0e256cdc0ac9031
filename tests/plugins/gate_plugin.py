"""A test modality whose detector waits at a gate, so a test can hold one live frame on the worker.

With the frame truly in flight, a second frame from the same session must be
refused (429) and a frame from another session must not be. The gate never
waits forever, so a failing test cannot hang the suite.
"""

from __future__ import annotations

import threading

from webapp import hookimpl
from webapp.interfaces import Box, ClinicalApp, Detection

ENTERED = threading.Event()  # set when a frame reaches the detector
RELEASE = threading.Event()  # the test sets it to let frames through


class GateDetector:
    name = "gate"

    def locate(self, image):
        ENTERED.set()
        RELEASE.wait(60)
        width, height = image.size
        return Detection(Box(width // 4, height // 4, 3 * width // 4, 3 * height // 4), 1.0, "gate")


@hookimpl
def register_clinical_apps(config):
    return [ClinicalApp("gate", "Gated test modality", bank="dermatology", classifier="medsiglip",
                        explainer="medsiglip-gradcam", detector="gate", subject="lesion")]


@hookimpl
def register_detectors(config):
    return [GateDetector()]
