"""MedSigLIP plugin: a zero-shot classifier and its Grad-CAM explainer.

Kept apart from the dermatology plugin because other modalities (chest X-ray)
reuse the same classifier with their own prompt bank. Importing this package and
constructing its objects is cheap: weights load later, in ``load()``, which the
core runs in a background thread.
"""

from webapp.embedding_cache import cache_from_config
from webapp.hookspecs import hookimpl

from .classifier import MedSigLIPClassifier
from .demo import demo_model_directory
from .gradcam import MedSigLIPGradCAM

__all__ = ["MedSigLIPClassifier", "MedSigLIPGradCAM", "register_classifiers", "register_explainers"]


@hookimpl
def register_classifiers(config):
    """The MedSigLIP classifier for ``config["MODEL"]`` (hub id or local folder), or the random demo model."""
    model = demo_model_directory() if config.get("DEMO_MODEL") else config["MODEL"]
    return [MedSigLIPClassifier(model, token=config.get("HF_TOKEN"), int8=config.get("INT8", False),
                                embedding_cache=cache_from_config(config), cuda_half=config.get("CUDA_HALF", True))]


@hookimpl
def register_explainers(config):
    """Grad-CAM over MedSigLIP's vision tower."""
    return [MedSigLIPGradCAM()]
