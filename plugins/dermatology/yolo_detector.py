"""A lesion detector backed by lesion-trained ultralytics YOLO weights.

Used only when an operator configures weights (``PRIVASCAN_LESION_WEIGHTS``,
read by the caller and passed in). Never the COCO ``yolov8n.pt``: it finds
people and cups, not lesions, and a bare name makes ultralytics download it.

Ultralytics needs care in a privacy-first app:

- It phones home (settings sync, version checks, downloads, auto-installing
  packages) unless told not to *before its first import*; ``_import_ultralytics``
  sets the switches, then imports.
- Importing it patches ``cv2`` and ``PIL`` functions process-wide, so it is
  imported lazily, here only, the first time weights are loaded.
- Its ``.pt`` files are pickles. We load only the configured path, and ask
  ultralytics for its restricted loader (``torch.load(weights_only=True)`` with
  an allow-list of its own model classes), so a tampered file cannot run code.
- Its predictor calls ``torch.set_num_threads(os.cpu_count() - 1)`` on a CPU
  the first time it runs: on a 2-core clinic laptop every MedSigLIP forward
  after the first detection would then run on one core (1.6-1.8x slower,
  measured). ``_torch_threads_kept`` puts the process's setting back.
- It is AGPL-3.0; keeping it inside this one module keeps that boundary visible.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from webapp.interfaces import Box, Detection, ModelUnavailable

_import_lock = threading.Lock()


def _config_dir() -> Path:
    """Where ultralytics may write its settings file: the user's config dir, never the project."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "privascan"


@contextlib.contextmanager
def _torch_threads_kept():
    """Whatever ultralytics does inside, torch's intra-op thread count is the same afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _import_ultralytics():
    """Import ultralytics with every network and auto-install feature switched off first."""
    with _import_lock:
        os.environ["YOLO_OFFLINE"] = "1"  # no connectivity probes, no downloads
        os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install missing packages
        os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # weights_only unpickling with an allow-list
        # An operator's own choice wins; ultralytics adds an "Ultralytics" sub-folder.
        os.environ.setdefault("YOLO_CONFIG_DIR", str(_config_dir()))
        pillow_open = Image.open if Image.open.__module__ == Image.__name__ else None
        import ultralytics
        from ultralytics import settings

        # Importing it replaces PIL's Image.open process-wide with a wrapper
        # that tries to install a HEIF plugin whenever Pillow cannot identify
        # a file: every untrusted upload would meet it. Put Pillow's back
        # (HEIF is already registered by webapp.images).
        if pillow_open is not None:
            Image.open = pillow_open

        if settings.get("sync", True):
            settings.update({"sync": False})  # no usage analytics
        return ultralytics


class YoloLesionDetector:
    """Returns the highest-confidence YOLO box above ``min_confidence``, or None."""

    name = "yolo"

    def __init__(
        self,
        weights_path: str | os.PathLike,
        min_confidence: float = 0.25,
        image_size: int = 640,
        device: str | None = None,
    ):
        text = os.fspath(weights_path)
        path = Path(text).expanduser()
        # A bare file name is what ultralytics treats as "download this
        # official asset"; insist on a real path to the operator's weights.
        if os.sep not in text and (os.altsep is None or os.altsep not in text):
            raise ValueError(
                f"Lesion weights must be given as a path to a .pt file, not a bare name ({text!r}): "
                "a bare name like 'yolov8n.pt' makes ultralytics download COCO weights, which find "
                "people and cups, not lesions."
            )
        if not path.is_file():
            raise ValueError(f"Lesion weights not found: {str(path)!r} is not a file.")
        if path.suffix != ".pt":
            raise ValueError(f"Lesion weights must be an ultralytics .pt file, got {path.name!r}.")
        self.weights_path = path.resolve()
        self.min_confidence = float(min_confidence)
        self.image_size = int(image_size)
        self.device = device
        self._model = None
        self._load_lock = threading.Lock()

    def load(self):
        """Load the weights once (thread-safe); raise ModelUnavailable with a reason if that fails."""
        with self._load_lock:
            if self._model is None:
                _import_ultralytics()
                from ultralytics import YOLO
                from ultralytics import utils as ultralytics_utils

                try:
                    if not ultralytics_utils.SAFE_LOAD:
                        # Someone imported ultralytics before us without the
                        # flag: vet the pickle with the restricted loader first.
                        from ultralytics.nn.tasks import torch_safe_load

                        torch_safe_load(str(self.weights_path), safe_only=True)
                    model = YOLO(str(self.weights_path), task="detect")
                except Exception as error:  # a pickle, a zip or a version problem: all unusable
                    raise ModelUnavailable(
                        f"Could not load the lesion weights {self.weights_path.name}: {type(error).__name__}.",
                        "Check PRIVASCAN_LESION_WEIGHTS points at a YOLO detection checkpoint trained on lesions.",
                    ) from error
                names = set(model.names.values()) if isinstance(model.names, dict) else set(model.names)
                if len(names) == 80 and {"person", "cup"} <= names:
                    raise ModelUnavailable(
                        "The configured YOLO weights are the COCO model: they find people and cups, not lesions.",
                        "Configure lesion-trained weights, or unset PRIVASCAN_LESION_WEIGHTS "
                        "to use the classical localizer.",
                    )
                self._model = model
        return self._model

    def locate(self, image: Image.Image) -> Detection | None:
        model = self.load()
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        # Ultralytics reads numpy arrays as OpenCV does: BGR. The array stays in
        # memory; a path or URL source would make it read (or fetch) a file.
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with _torch_threads_kept():  # its first predict lowers torch's thread count for the whole process
            results = model.predict(
                bgr,
                conf=self.min_confidence,
                imgsz=self.image_size,
                device=self.device,
                verbose=False,
                save=False,
            )
        boxes = results[0].boxes
        if boxes is None or len(boxes) == 0:
            return None
        confidences = boxes.conf.cpu().numpy()
        best = int(np.argmax(confidences))
        x0, y0, x1, y1 = boxes.xyxy[best].cpu().numpy().tolist()
        # Round outwards and clip: ultralytics already maps to original pixels.
        box = Box(
            max(0, int(np.floor(x0))),
            max(0, int(np.floor(y0))),
            min(width, int(np.ceil(x1))),
            min(height, int(np.ceil(y1))),
        )
        if box.width <= 0 or box.height <= 0:
            return None
        return Detection(box=box, confidence=float(confidences[best]), method="yolo")
