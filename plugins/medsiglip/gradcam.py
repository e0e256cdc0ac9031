"""Grad-CAM for MedSigLIP: the scores and the heatmap come from one forward pass.

``grad_cam`` runs the vision tower once on the crop's pixel tensor (the same
tensor ``classify`` uses) through a small head that turns pooled image features
into bank logits with the classifier's cached class embeddings, scale and bias.
Our target object records those logits, so the ``Scores`` need no second pass.
Every parameter is frozen and only the last encoder layer's input is marked as
needing a gradient, so autograd records a graph only from the last layer on, the
backward pass stops there and computes no weight gradient: the heatmap costs a
few percent on top of one classification.

The explainer returns the heatmap as an array; the core draws the overlay
(webapp/render.py) and the page its legend. torch and cv2 are imported inside
functions so that importing the plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from webapp.interfaces import Classifier, Explanation, PromptBank, TemplateSet

from .classifier import MedSigLIPClassifier, build_scores, unit_embeddings

if TYPE_CHECKING:  # pragma: no cover
    import torch



def tokens_to_grid(tokens: "torch.Tensor") -> "torch.Tensor":
    """(B, N, C) patch tokens -> (B, C, side, side); SigLIP has no CLS token to drop."""
    batch, count, channels = tokens.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{count} tokens do not form a square grid")
    return tokens.reshape(batch, side, side, channels).permute(0, 3, 1, 2)


@contextlib.contextmanager
def gradients_from_the_last_layer(vision_model):
    """Within: the last encoder layer's input requires a gradient; every parameter stays frozen.

    Grad-CAM needs the gradient of a logit with respect to the last layer's
    activations, not any weight's. So nothing before the last layer records
    a graph, the backward pass stops at the last layer's input, and no weight
    gradient is computed at all (the head's and last layer's weights are not
    trained here). A forward pre-hook marks the last layer's input hidden
    states, a fresh tensor with no history, as requiring a gradient.
    """
    vision_model.requires_grad_(False)

    def mark_input(module, args, kwargs):
        if args:
            return (args[0].detach().requires_grad_(True), *args[1:]), kwargs
        kwargs["hidden_states"] = kwargs["hidden_states"].detach().requires_grad_(True)
        return args, kwargs

    handle = vision_model.encoder.layers[-1].register_forward_pre_hook(mark_input, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _bank_head_module():
    import torch

    class BankLogits(torch.nn.Module):
        """pixel_values -> logits over the bank, exactly as ``MedSigLIPClassifier.classify`` computes them."""

        def __init__(self, classifier: MedSigLIPClassifier, text_embeddings: torch.Tensor, adapter=None):
            super().__init__()
            self.vision_model = classifier.vision_model
            self._classifier = classifier
            self._text = text_embeddings
            self._adapter = adapter
            self.similarities: torch.Tensor | None = None
            self.zero_shot: tuple[torch.Tensor, torch.Tensor] | None = None
            self.features: torch.Tensor | None = None

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            features = self.vision_model(pixel_values=pixel_values).pooler_output
            self.features = features.detach()  # the image embedding of this very pass
            if self._adapter is not None:
                # A clinic's adapter scores the same pooled features: the heatmap explains its logit.
                # The zero-shot logits of the same features are kept for comparison (no second pass).
                with torch.no_grad():
                    zero_logits, zero_similarities = self._classifier.logits_from_image_features(features.detach(), self._text)
                self.zero_shot = (zero_logits.detach(), zero_similarities.detach())
                logits = self._adapter.torch_logits(features)
                self.similarities = torch.full_like(logits, float("nan")).detach()
                return logits
            logits, similarities = self._classifier.logits_from_image_features(features, self._text)
            self.similarities = similarities.detach()
            self.features = features.detach()  # for the scope gate: same pass, no second forward
            return logits

    return BankLogits


def grad_cam(model, layer, pixels: "torch.Tensor", target) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) of ``target(model(pixels)[0])`` at ``layer``'s output, as a [0, 1] map of the input's size.

    The tokens' gradients are averaged into one weight per channel, the
    weighted activations summed and kept where positive, then scaled to
    [0, 1] and resized to the input (bilinear) and scaled again: the same
    arithmetic as pytorch-grad-cam's ``GradCAM`` with one target layer
    (tests/test_gradcam.py compares the two), written out here because that
    package's import pulls scikit-learn and matplotlib into the inference
    process (0.07 GB resident) for a heatmap that uses neither.
    """
    import cv2

    kept = {}

    def keep(module, args, output):
        if output.requires_grad:
            output.retain_grad()
        kept["activations"] = output

    handle = layer.register_forward_hook(keep)
    try:
        output = model(pixels)
    finally:
        handle.remove()
    target(output[0]).backward()
    activations = tokens_to_grid(kept["activations"].detach())[0].float().cpu().numpy()  # (C, side, side)
    gradients = tokens_to_grid(kept["activations"].grad)[0].float().cpu().numpy()
    weights = gradients.mean(axis=(1, 2))
    cam = np.maximum((weights[:, None, None] * activations).sum(axis=0), 0)
    height, width = pixels.shape[-2:]
    cam = cv2.resize(_unit_range(cam), (width, height))
    return _unit_range(np.maximum(cam, 0)).astype(np.float32)


def _unit_range(image: np.ndarray) -> np.ndarray:
    image = image - image.min()
    return np.float32(image / (1e-7 + image.max()))


class RecordLogitsTarget:
    """A pytorch-grad-cam target that keeps the pass's logits and picks the class to explain.

    With ``index=None`` it explains that same pass's top class, so no extra forward
    is needed to find it.
    """

    def __init__(self, index: int | None = None):
        self.index = index
        self.logits: "torch.Tensor | None" = None

    def __call__(self, model_output: "torch.Tensor") -> "torch.Tensor":
        self.logits = model_output.detach()
        if self.index is None:
            self.index = int(model_output.argmax())
        return model_output[self.index]


class MedSigLIPGradCAM:
    """Grad-CAM on MedSigLIP's last vision layer, for a condition of the bank."""

    name = "medsiglip-gradcam"
    explains = MedSigLIPClassifier.name
    supports_adapter = True  # explain(..., adapter=) explains an adapter's logit (webapp/adapter.py)

    def explain(
        self,
        classifier: Classifier,
        crop: Image.Image,
        bank: PromptBank,
        template_set: TemplateSet,
        condition_id: str | None = None,
        adapter=None,
    ) -> Explanation:
        """Classify and explain in one pass; ``None`` targets that pass's top condition.

        With ``adapter`` (``webapp.adapter.Adapter``) the logits are the adapter's,
        over its conditions, and the heatmap explains the adapter's logit.
        """
        import torch

        if not isinstance(classifier, MedSigLIPClassifier):
            raise TypeError(f"{self.name} explains MedSigLIP classifiers, not {type(classifier).__name__}")
        bank_ids = [condition.id for condition in bank.conditions]
        text = classifier.text_embeddings(bank, template_set)
        condition_ids = list(adapter.conditions) if adapter is not None else bank_ids
        index = None if condition_id is None else condition_ids.index(bank.condition(condition_id).id)
        vision_model = classifier.vision_model
        head = _bank_head_module()(classifier, text, adapter)
        pixels = classifier.pixel_values(crop)  # the very tensor classify() scores
        target = RecordLogitsTarget(index)
        with torch.enable_grad(), gradients_from_the_last_layer(vision_model):
            heatmap = grad_cam(head, vision_model.encoder.layers[-1].layer_norm1, pixels, target)
        scores = build_scores(condition_ids, target.logits, head.similarities[0])
        zero_shot = build_scores(bank_ids, head.zero_shot[0], head.zero_shot[1][0]) if head.zero_shot else None
        scores.embedding = unit_embeddings(head.features)[0]
        scope = classifier.scope_probabilities(head.features, bank)
        if scope is not None:
            scores.scope_probabilities = scope[0]
            if zero_shot is not None:
                zero_shot.scope_probabilities = scope[0]
        heatmap = np.clip(np.nan_to_num(heatmap), 0.0, 1.0)
        return Explanation(scores=scores, condition_id=condition_ids[target.index], heatmap=heatmap, zero_shot_scores=zero_shot)

