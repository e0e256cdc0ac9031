"""The replaced system's way of producing a result, rebuilt for a fair comparison.

Dermatolog AI Scan (see shared/REFERENCE.md) re-runs the text tower for every
photo, runs its detector twice and never uses the box, and computes Grad-CAM
with a backward pass through the whole model. This module does the same work
on the same weights, with the same 12 single-template prompts it uses, so the
benchmark compares approaches rather than bank sizes.

One more thing its design does on a small CPU: it runs ultralytics in the
model's process, and ultralytics' first predict sets torch to
``os.cpu_count() - 1`` threads for the whole process (one thread on a
2-core machine), so every later MedSigLIP pass of the replaced system runs on
that many threads. ``run()`` reproduces it by default (``threads=None``); with
``threads=N`` the same work runs on N threads, the comparison with that
defect taken out (the benchmark prints both).
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

TEMPLATE = "A patient-submitted smartphone photograph showing {}."
# Twelve conditions, one description each, as the replaced system had.
CONDITION_IDS = (
    "melanoma", "basal_cell_carcinoma", "squamous_cell_carcinoma", "bowens_disease", "actinic_keratosis",
    "melanocytic_nevus", "seborrheic_keratosis", "psoriasis", "atopic_dermatitis", "acne_vulgaris",
    "rosacea", "normal_skin",
)


class ReplacedSystemBaseline:
    def __init__(self, model_dir: str, bank, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.torch = torch
        self.device = device
        self.model = AutoModel.from_pretrained(model_dir, use_safetensors=True).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(model_dir)
        by_id = {c.id: c for c in bank.conditions}
        chosen = [by_id[i] for i in CONDITION_IDS if i in by_id][:12]
        self.prompts = [TEMPLATE.format(c.descriptions[0]) for c in chosen]
        self.detector = _random_yolo()
        caller = torch.get_num_threads()
        self.detector.predict(np.zeros((64, 64, 3), np.uint8), verbose=False, save=False)  # its predictor's set-up
        self.threads = torch.get_num_threads()  # what ultralytics leaves the replaced system's process at
        torch.set_num_threads(caller)

    def run(self, image: Image.Image, threads: int | None = None) -> dict[str, float]:
        """One full result its way; ``threads``: torch threads for it (None: as ultralytics leaves them)."""
        torch = self.torch
        caller = torch.get_num_threads()
        torch.set_num_threads(threads or self.threads)
        try:
            return self._run(image)
        finally:
            torch.set_num_threads(caller)  # the benchmark's own passes keep the product's thread count

    def _run(self, image: Image.Image) -> dict[str, float]:
        torch = self.torch
        timings: dict[str, float] = {}
        started = time.perf_counter()
        pixels_bgr = np.asarray(image)[:, :, ::-1]
        for _ in range(2):  # the detector ran twice per photo, its box unused
            self.detector.predict(pixels_bgr, verbose=False, save=False)
        timings["detect_twice"] = time.perf_counter() - started

        started = time.perf_counter()
        inputs = self.processor(text=self.prompts, images=image, padding="max_length", max_length=64,
                                truncation=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self.model(**inputs)  # text tower re-run for this photo
        top = int(output.logits_per_image[0].argmax())
        timings["classify_text_and_vision"] = time.perf_counter() - started

        started = time.perf_counter()
        self._gradcam_full_backward(inputs, top)
        timings["gradcam_full_backward"] = time.perf_counter() - started
        timings["total"] = sum(timings.values())
        return timings

    def _gradcam_full_backward(self, inputs, target_index: int) -> np.ndarray:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        torch = self.torch
        model = self.model
        input_ids = inputs["input_ids"]

        class BothTowers(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, pixel_values):
                return self.model(input_ids=input_ids, pixel_values=pixel_values).logits_per_image

        def tokens_to_grid(tokens):
            side = int(tokens.shape[1] ** 0.5)
            return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)

        model.requires_grad_(True)  # everything: the backward runs through both towers
        cam = GradCAM(model=BothTowers(), target_layers=[model.vision_model.encoder.layers[-1].layer_norm1],
                      reshape_transform=tokens_to_grid)
        try:
            with torch.enable_grad():
                return cam(input_tensor=inputs["pixel_values"], targets=[ClassifierOutputTarget(target_index)])
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)


def _random_yolo():
    """YOLOv8n with random weights, built offline from its YAML (speed does not depend on weights)."""
    from plugins.dermatology.yolo_detector import _import_ultralytics

    ultralytics = _import_ultralytics()
    return ultralytics.YOLO("yolov8n.yaml")
