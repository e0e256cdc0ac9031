"""Zero-shot MedSigLIP classifier: a crop scored against a prompt bank.

The text tower runs once per (bank, template set) at start-up; the averaged,
normalised class embeddings are cached in memory and the text tower is then
released, so a request runs the vision tower only. With an embedding cache
(webapp/embedding_cache.py) they are also stored, keyed by the weights'
fingerprint and the exact prompts; a later start that finds every set it
needs there loads the vision tower alone and never touches the text weights. The maths is SigLIP's:
logits = exp(logit_scale) * cos(image, text) + logit_bias, softmax over the bank
for ranking (the bias cancels there but is kept so logits match the model's).

torch and transformers are imported inside methods so that importing the plugin
(and constructing the classifier) stays cheap; the core calls ``load()`` in a
background thread.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from webapp.embedding_cache import EmbeddingCache
from webapp.i18n import N_, Message
from webapp.memory import drop_file_pages, file_mapped_ranges, release_freed_memory
from webapp.interfaces import ModelUnavailable, PromptBank, Scores, TemplateSet

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "google/medsiglip-448"
DEFAULT_INPUT_SIZE = 448
HUB_PAGE = "https://huggingface.co/google/medsiglip-448"
TEXT_MAX_LENGTH = 64  # MedSigLIP's text context; prompts are padded to it, as in training
TEXT_BATCH = 64  # prompts per text-tower call at start-up (bounds activation memory)
_TRUE = {"1", "ON", "YES", "TRUE"}
PICKLED_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# How the text side is computed (see _embed_prompts/_embed_bank); part of every cache key,
# so changing the recipe invalidates what was stored with the old one.
TEXT_RECIPE = "siglip-text/1: max_length=64 padding=max_length input_ids-only; unit prompts, class mean, unit"
# Files besides the weights that shape the text side (tokenizer, config); a local
# folder's fingerprint covers only its safetensors, so these are hashed too.
TEXT_SIDE_FILES = ("config.json", "spiece.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")


class TextTowerReleased(ModelUnavailable):
    """A bank needs text embeddings that were not prepared before the text tower was released."""


def hub_offline() -> bool:
    """Whether the hub must not be contacted (read at call time, unlike huggingface_hub's constant)."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in _TRUE:
            return True
    return bool(constants.HF_HUB_OFFLINE)


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def quantize_frozen_layers(vision_model, released=None):
    """PRIVASCAN_INT8, in place: every encoder layer but the last in dynamic int8; returns the model.

    ``released(tensors)`` is called with each module's fp32 tensors as soon
    as its int8 replacement is in place (start-up lets their file pages go
    then; the layers are quantized in place, so no fp32 copy is ever made).

    The frozen layers need no gradient (nothing before the last layer
    requires one), so they run torch.ao's dynamic int8 Linear kernels. The
    last layer, the post-layernorm and the pooling head compute in fp32,
    because Grad-CAM hooks the last layer and back-propagates from the
    logits to it and quantized kernels have no backward; their Linear
    weights are only *stored* in int8 (``Int8WeightLinear``: dequantized to
    fp32 for each pass), which saves 76 MB at MedSigLIP's size. So
    classification and the heatmap both run through this one tower. CPU only
    (torch.ao's dynamic quantization has no CUDA kernels).
    """
    import warnings

    import torch

    layers = vision_model.encoder.layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the API still works in 2.14
        for index in range(len(layers) - 1):
            fp32 = [*layers[index].parameters(), *layers[index].buffers()]
            layers[index] = torch.ao.quantization.quantize_dynamic(layers[index], {torch.nn.Linear}, dtype=torch.qint8,
                                                                   inplace=True)
            if released is not None:
                released(fp32)
            del fp32
    store_linear_weights_int8(layers[-1], released)
    head = getattr(vision_model, "head", None)
    if head is not None and getattr(head, "mlp", None) is not None:
        store_linear_weights_int8(head.mlp, released)  # the head's attention keeps fp32 in_proj weights (nn.MultiheadAttention)
    return vision_model


def store_linear_weights_int8(module, released=None) -> None:
    """Replace every ``nn.Linear`` under ``module`` by an ``Int8WeightLinear`` (fp32 compute, int8 storage)."""
    import torch

    kind = _int8_weight_linear()
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear:
            setattr(module, name, kind(child))
            if released is not None:
                released([*child.parameters(), *child.buffers()])
        else:
            store_linear_weights_int8(child, released)


_INT8_WEIGHT_LINEAR = None


def _int8_weight_linear():
    """The ``Int8WeightLinear`` class (made on first use: importing this module must not import torch)."""
    global _INT8_WEIGHT_LINEAR
    if _INT8_WEIGHT_LINEAR is not None:
        return _INT8_WEIGHT_LINEAR
    import torch
    import torch.nn.functional as F

    class Int8WeightLinear(torch.nn.Module):
        """A Linear whose weight is kept in int8 (symmetric, one scale per output row) and computed in fp32.

        Each pass dequantizes the weight, so autograd carries gradients to
        the input exactly as through an fp32 Linear with those weights; only
        the weight's rounding (at most half a step of its row's scale) differs.
        """

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            weight = linear.weight.detach().float()
            scale = (weight.abs().amax(dim=1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("weight_int8", torch.round(weight / scale).clamp(-127, 127).to(torch.int8))
            self.register_buffer("weight_scale", scale)
            bias = linear.bias
            self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

        @property
        def weight(self) -> torch.Tensor:
            return self.weight_int8.float() * self.weight_scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.weight.to(x.dtype), self.bias)

    _INT8_WEIGHT_LINEAR = Int8WeightLinear
    return Int8WeightLinear


def half_precision(device: str | None, enabled: bool = True):
    """Autocast for classification on CUDA (bf16 where the GPU has it, else fp16); nothing elsewhere.

    Only passes without a heatmap use it (live frames, the API without
    explain, eval): the explainer's pass stays fp32, so gradients and the
    heatmap are as faithful as on a CPU. On a CPU bf16 is 7x slower on AVX2
    (REFERENCE.md), so nothing changes there.
    """
    import contextlib

    import torch

    if not enabled or device != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def is_quantized(vision_model) -> bool:
    """Whether any part runs dynamic int8 kernels (the frozen layers in PRIVASCAN_INT8 mode)."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in vision_model.modules())


def time_one_layer(layer, tokens: int, width: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of one encoder layer on a neutral (all-zero) input of ``tokens`` x ``width``.

    Every encoder layer has the same shape, so one layer in fp32 against the
    same layer in int8 tells whether int8 pays on this host, without ever
    holding the whole fp32 tower (and its start-up peak) just to time it.
    """
    import time

    import torch

    hidden = torch.zeros(1, tokens, width)
    best = float("inf")
    with torch.inference_mode():
        layer(hidden, None)  # the first call sets up kernels
        for _ in range(repeats):
            started = time.perf_counter()
            layer(hidden, None)
            best = min(best, time.perf_counter() - started)
    return best


def vision_only_model(config, vision, logit_scale: float, logit_bias: float):
    """A SiglipModel stand-in for a warm start: the vision tower, the logit scale and bias, no text tower.

    It answers what the classifier and explainer use of SiglipModel
    (``vision_model``, ``get_image_features``, ``logit_scale``/``logit_bias``,
    ``config``) and has ``text_model = None``, as a released model has.
    """
    import torch

    class VisionOnlySiglip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = config
            self.vision_model = vision
            self.text_model = None
            self.logit_scale = torch.nn.Parameter(torch.tensor([logit_scale], dtype=torch.float32), requires_grad=False)
            self.logit_bias = torch.nn.Parameter(torch.tensor([logit_bias], dtype=torch.float32), requires_grad=False)

        def get_image_features(self, pixel_values, **kwargs):
            return self.vision_model(pixel_values=pixel_values, **kwargs)  # as SiglipModel.get_image_features

    return VisionOnlySiglip()


def text_side_digest(folder: Path) -> str:
    """sha256 of a local model folder's tokenizer and config files (small): they shape the text embeddings."""
    digest = hashlib.sha256()
    for name in TEXT_SIDE_FILES:
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:32]


def build_scores(condition_ids: Sequence[str], logits: "torch.Tensor", similarities: "torch.Tensor") -> Scores:
    """One row of logits and cosines (1-D tensors, bank order) as the core's ``Scores``."""
    import torch

    logits64 = logits.detach().to("cpu", torch.float64).reshape(-1)
    return Scores(
        condition_ids=list(condition_ids),
        logits=logits64.numpy(),
        probabilities=logits64.softmax(-1).numpy(),
        similarities=similarities.detach().to("cpu", torch.float64).reshape(-1).numpy(),
    )


def unit_embeddings(image_features: "torch.Tensor"):
    """Pooled image features (B, d) as unit-norm float32 numpy rows: what lesion matching compares."""
    import torch.nn.functional as F

    return F.normalize(image_features.detach().float(), dim=-1).to("cpu").numpy()


def load_failure(exc: BaseException, model: str, *, offline: bool, have_token: bool) -> ModelUnavailable:
    """Translate a loading exception (hub, transformers, OS) into a reason and advice a clinic can act on."""
    from huggingface_hub import errors as hub_errors

    chain = []
    seen = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__

    def find(kind):
        return next((e for e in chain if isinstance(e, kind)), None)

    # Made on the loader thread: Messages, shown in each reader's language.
    params = {"model": model, "hub": HUB_PAGE, "default": DEFAULT_MODEL, "error": type(exc).__name__,
              "alternatives": Message(N_("or set PRIVASCAN_MODEL to a folder holding a downloaded copy"))}

    def unavailable(reason: str, advice: str) -> ModelUnavailable:
        return ModelUnavailable(Message(reason, **params), Message(advice, **params))

    if find(hub_errors.GatedRepoError) is not None:
        if not have_token:
            return unavailable(
                N_("%(model)s is gated and no Hugging Face token is set."),
                N_("Accept the Health AI Developer Foundations (HAI-DEF) terms at %(hub)s with your "
                   "Hugging Face account, create a read token and set HF_TOKEN to it; %(alternatives)s."),
            )
        return unavailable(
            N_("The Hugging Face token in use has no access to the gated model %(model)s."),
            N_("Sign in with the account the token belongs to, accept the HAI-DEF terms at %(hub)s "
               "and restart; %(alternatives)s."),
        )
    if find(hub_errors.RepositoryNotFoundError) is not None:
        return unavailable(
            N_("No model called %(model)s was found on the Hugging Face hub."),
            N_("Check the PRIVASCAN_MODEL setting (default %(default)s); %(alternatives)s."),
        )
    http = find(hub_errors.HfHubHTTPError)
    status = getattr(getattr(http, "response", None), "status_code", None)
    if status == 401:
        return unavailable(
            N_("The Hugging Face token was refused (401)."),
            N_("Create a new read token, set HF_TOKEN to it and restart; %(alternatives)s."),
        )
    if find(hub_errors.LocalEntryNotFoundError) is not None or find(hub_errors.OfflineModeIsEnabled) is not None:
        if not have_token and not offline:
            return unavailable(
                N_("No MedSigLIP weights are configured: %(model)s is not in the local cache and no Hugging Face "
                   "token is set, so PrivaScan did not contact the hub."),
                N_("Accept the Health AI Developer Foundations (HAI-DEF) terms at %(hub)s, create a read token "
                   "and set HF_TOKEN to it; %(alternatives)s. To try the interface without the model, set "
                   "PRIVASCAN_DEMO_MODEL=1."),
            )
        if offline:
            return unavailable(
                N_("Offline mode (HF_HUB_OFFLINE) is on and %(model)s is not in the local Hugging Face cache."),
                N_("Download the model once with network access (after accepting the HAI-DEF terms), "
                   "%(alternatives)s, or unset HF_HUB_OFFLINE."),
            )
        return unavailable(
            N_("The Hugging Face hub could not be reached and %(model)s is not in the local cache."),
            N_("Check this server's network or proxy settings and restart; %(alternatives)s."),
        )
    if find(hub_errors.HFValidationError) is not None:
        return unavailable(
            N_("%(model)s is neither an existing folder nor a valid hub model id."),
            N_("Set PRIVASCAN_MODEL to %(default)s or to a folder holding a downloaded copy."),
        )
    message = str(exc)
    if "safetensors" in message and ("does not appear to have" in message or "no file named" in message):
        return unavailable(
            N_("%(model)s has no safetensors weights; PrivaScan does not load pickled weights."),
            N_("Use the official %(default)s files, which include model.safetensors."),
        )
    if isinstance(exc, (ValueError, KeyError)) and ("model_type" in message or "Unrecognized" in message):
        return unavailable(
            N_("%(model)s is not a SigLIP model."),
            N_("Set PRIVASCAN_MODEL to %(default)s or to a folder holding a downloaded copy of it."),
        )
    if find(MemoryError) is not None or "out of memory" in message.lower():
        return unavailable(
            N_("Not enough memory to load %(model)s."),
            N_("MedSigLIP needs about 4 GB of free memory while loading (2 GB afterwards); "
               "close other programs or use a larger machine."),
        )
    return unavailable(
        N_("%(model)s could not be loaded (%(error)s)."),
        N_("The server log has the details; check the PRIVASCAN_MODEL and HF_TOKEN settings."),
    )


class MedSigLIPClassifier:
    """MedSigLIP (or any SigLIP checkpoint) used zero-shot against a prompt bank."""

    name = "medsiglip"

    def __init__(
        self,
        model_id_or_path: str = DEFAULT_MODEL,
        token: str | None = None,
        device: str | None = None,
        int8: bool = False,
        embedding_cache: EmbeddingCache | None = None,
        cuda_half: bool = True,
    ):
        self.model_id_or_path = str(model_id_or_path or DEFAULT_MODEL)
        self.token = token or None
        self.requested_device = device
        # PRIVASCAN_INT8: every vision layer but the last in dynamic int8 (CPU),
        # for classification and Grad-CAM alike (quantize_frozen_layers). Whether
        # it pays depends on the host, so start-up times one encoder layer of each.
        self.int8 = int8
        self.int8_timing: tuple[float, float] | None = None  # (fp32 s, int8 s) of one encoder layer at start-up
        self.cuda_half = cuda_half  # PRIVASCAN_CUDA_HALF: autocast for classification on CUDA (heatmaps stay fp32)
        self.device: str | None = None
        self.model = None
        self.processor = None
        self._scale = None
        self._logit_bias = None
        # (bank key, template set id) -> (condition ids, (n_conditions, d) unit-norm tensor)
        self._text_cache: dict[tuple[str, str], tuple[tuple[str, ...], "torch.Tensor"]] = {}
        self._lock = threading.RLock()
        # Stored bank embeddings (None: none kept). ``expect_banks`` names the sets start-up
        # needs; when the cache holds all of them, load() skips the text tower.
        self.embedding_cache = embedding_cache
        self._expected: list[tuple[PromptBank, TemplateSet]] = []
        self._weights_id: dict | None = None  # what names the weights in cache keys; None: not computed
        self._persisted: set[str] = set()  # cache keys known to be stored (read from, or written to, the cache)
        self.warm_start = False  # the last load() came from the cache, without the text tower
        self._released = False

    # ------------------------------------------------------------------ loading
    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    @property
    def judges_scope(self) -> bool:
        """Whether the zero-shot scope gate means anything: not with random weights (demo, tests)."""
        return self.model is not None and not getattr(self.model.config, "privascan_random_weights", False)

    @property
    def text_tower_released(self) -> bool:
        return self.model is not None and self.model.text_model is None

    def load(self) -> None:
        """Load weights and processor; every failure becomes a ``ModelUnavailable`` a user can act on."""
        with self._lock:
            if self.model is not None:
                return
            source, local = self._resolve_source()
            offline = hub_offline()
            have_token = self._have_token()
            # A local folder never needs the hub. A hub id uses it only when the
            # operator configured access (a token; the model is gated, so
            # nothing could be downloaded without one) and offline mode is off;
            # otherwise only the local Hugging Face cache is read.
            cache_only = local or offline or not have_token
            kwargs = {"local_files_only": True} if local else {"token": self.token, "local_files_only": cache_only}
            try:
                import torch
                from transformers import AutoConfig, AutoModel, AutoProcessor

                # The config is a few KB: check the architecture before fetching gigabytes.
                config = AutoConfig.from_pretrained(source, **kwargs)
                if getattr(config, "model_type", None) != "siglip":
                    raise ModelUnavailable(
                        f"{self.model_id_or_path} is a '{getattr(config, 'model_type', 'unknown')}' model, not SigLIP.",
                        f"Set PRIVASCAN_MODEL to {DEFAULT_MODEL} or to a folder holding a downloaded copy of it.",
                    )
                device = self.requested_device or pick_device()
                self._weights_id = self._identify_weights(source, local)
                cached = self._cached_sets(self._expected)
                model = None
                if cached is not None:
                    model = self._load_vision_only(source, config, cached, kwargs)
                if model is None:
                    cached = None
                    model = AutoModel.from_pretrained(source, use_safetensors=True, dtype=torch.float32, **kwargs)
                processor = AutoProcessor.from_pretrained(source, **kwargs)
                if not hasattr(model, "get_image_features") or not hasattr(processor, "image_processor"):
                    raise ModelUnavailable(
                        f"{self.model_id_or_path} does not load as a SigLIP image-text model.",
                        f"Set PRIVASCAN_MODEL to {DEFAULT_MODEL} or to a folder holding a downloaded copy of it.",
                    )
                # Inference only: no parameter needs a gradient (the explainer re-enables
                # the last vision layer and head, the only ones Grad-CAM needs).
                model.requires_grad_(False)
                model.to(device).eval()
            except ModelUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is translated for the user
                log.warning("Could not load %s", self.model_id_or_path, exc_info=True)
                raise load_failure(exc, self.model_id_or_path, offline=offline, have_token=have_token) from exc
            self.model, self.processor, self.device = model, processor, device
            self._scale = model.logit_scale.detach().clone().exp()  # exp(t'), as SigLIP applies it
            self._logit_bias = model.logit_bias.detach().clone()
            self._text_cache.clear()
            self._released = False
            self.warm_start = cached is not None
            if cached is not None:
                for memory_key, (store_key, rows, tensor) in cached.items():
                    self._text_cache[memory_key] = (rows, tensor.to(device))
                    self._persisted.add(store_key)
                log.info("%s: every bank's text embeddings came from the cache %s; the text tower was not loaded",
                         self.model_id_or_path, self.embedding_cache.describe())

    # ------------------------------------------------------ embedding cache
    def expect_banks(self, pairs: Sequence[tuple[PromptBank, TemplateSet]]) -> None:
        """Name the (bank, template set) pairs start-up will prepare (call before ``load``).

        When the embedding cache holds every one of them (and their scope
        prompts), ``load`` reads them from it and loads the vision tower only.
        """
        self._expected = list(pairs)

    def _identify_weights(self, source: str, local: bool) -> dict | None:
        """What names these weights in cache keys, or None (no cache, or the weights cannot be named)."""
        if self.embedding_cache is None:
            return None
        from webapp.fingerprint import FingerprintUnavailable, model_fingerprint

        try:
            fingerprint = model_fingerprint(source)
        except FingerprintUnavailable as exc:
            log.info("embedding cache not used for %s: %s", self.model_id_or_path, exc)
            return None
        # A hub commit names every file; a folder's fingerprint covers its safetensors only.
        return {"weights": fingerprint, "text_side": text_side_digest(Path(source)) if local else ""}

    def _bank_identity(self, bank: PromptBank, template_set: TemplateSet) -> dict:
        """Everything one set of class embeddings depends on: the weights, the recipe and the exact prompts."""
        return {
            **(self._weights_id or {}),
            "recipe": TEXT_RECIPE,
            "template_set": template_set.id,
            "conditions": [[c.id, bank.prompts_for(c, template_set)] for c in bank.conditions],
        }

    def _scope_identity(self, prompts: tuple[str, ...]) -> dict:
        return {**(self._weights_id or {}), "recipe": TEXT_RECIPE, "scope_prompts": list(prompts)}

    def _scope_key(self, prompts: tuple[str, ...]) -> tuple[str, str]:
        return ("scope:" + hashlib.sha256(repr(prompts).encode()).hexdigest()[:16], "")

    def _cached_sets(self, pairs) -> dict | None:
        """Every pair's sets from the cache ({memory key: (store key, rows, tensor)}), or None if one is missing."""
        if self.embedding_cache is None or self._weights_id is None or not pairs:
            return None
        import torch

        from webapp.embedding_cache import entry_key

        found: dict = {}
        heads: set[tuple[float, float]] = set()
        wanted = []
        for bank, template_set in pairs:
            ids = tuple(c.id for c in bank.conditions)
            wanted.append((self._bank_key(bank, template_set), "bank", self._bank_identity(bank, template_set), ids))
            if bank.scope.enabled:
                prompts = bank.scope.prompts
                wanted.append((self._scope_key(prompts), "scope", self._scope_identity(prompts), prompts))
        for memory_key, kind, identity, rows in wanted:
            entry = self.embedding_cache.load(kind, identity)
            if entry is None or entry.rows != tuple(rows):
                return None
            heads.add((entry.logit_scale, entry.logit_bias))
            found[memory_key] = (entry_key(kind, identity), tuple(rows), torch.from_numpy(entry.vectors.copy()))
        if len(heads) != 1:  # entries of one model always agree; if not, trust none of them
            return None
        (self._cached_scale, self._cached_bias), = heads
        return found

    def missing_from_cache(self, pairs: Sequence[tuple[PromptBank, TemplateSet]]) -> list[tuple[PromptBank, TemplateSet]] | None:
        """The pairs whose embeddings the cache lacks, read without loading any weights; None: no usable cache."""
        with self._lock:
            if self._weights_id is None:
                self._weights_id = self._identify_weights(*self._resolve_source())
            if self._weights_id is None:
                return None
            return [pair for pair in pairs if self._cached_sets([pair]) is None]

    def _load_vision_only(self, source: str, config, cached: dict, kwargs: dict):
        """The vision tower alone (plus the cached logit scale and bias), or None to fall back to a full load."""
        import torch
        from transformers import SiglipVisionModel
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # it would list every text weight it skips as "unexpected"
        try:
            vision, info = SiglipVisionModel.from_pretrained(
                source, use_safetensors=True, dtype=torch.float32, output_loading_info=True, **kwargs
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("missing_keys") or info.get("mismatched_keys"):
            log.warning("%s: the vision tower alone did not load cleanly (%s); loading the whole model",
                        self.model_id_or_path, sorted(info.get("missing_keys") or [])[:5])
            return None
        return vision_only_model(config, vision, self._cached_scale, self._cached_bias)

    def _persist(self, kind: str, identity: dict, rows: tuple[str, ...], embeddings: "torch.Tensor", about: dict) -> None:
        """Store one set (start-up only: called from ``prepare``), unless it is known to be stored."""
        if self.embedding_cache is None:
            return
        if self._weights_id is None:  # a hub download finished during load(): name it now
            self._weights_id = self._identify_weights(*self._resolve_source())
            if self._weights_id is None:
                return
            identity = {**identity, **self._weights_id}
        from webapp.embedding_cache import entry_key

        key = entry_key(kind, identity)
        if key in self._persisted:
            return
        stored = self.embedding_cache.store(
            kind, identity, rows, embeddings.detach().to("cpu").float().numpy(),
            logit_scale=float(self.model.logit_scale.detach().reshape(-1)[0]),
            logit_bias=float(self._logit_bias.reshape(-1)[0]), about=about,
        )
        if stored:
            self._persisted.add(key)

    def _resolve_source(self) -> tuple[str, bool]:
        """Return (what to pass to from_pretrained, whether it is a local folder)."""
        raw = self.model_id_or_path
        path = Path(raw).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelUnavailable(
                    f"PRIVASCAN_MODEL points at the file {raw}, not at a model folder.",
                    "Point PRIVASCAN_MODEL at the folder that holds config.json and model.safetensors.",
                )
            if not (path / "config.json").is_file():
                raise ModelUnavailable(
                    f"The folder {raw} holds no config.json, so it is not a downloaded model.",
                    "Point PRIVASCAN_MODEL at the folder that holds config.json and model.safetensors "
                    f"(for example a copy of {DEFAULT_MODEL}).",
                )
            pickled = sorted(
                f.name for pattern in PICKLED_WEIGHTS for f in path.glob(pattern) if f.is_file()
            )
            if pickled and not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
                raise ModelUnavailable(
                    f"The folder {raw} holds only pickled weights ({', '.join(pickled[:3])}); PrivaScan loads "
                    "safetensors only, because loading a pickle can run any code it contains.",
                    f"Use the official {DEFAULT_MODEL} files, which include model.safetensors.",
                )
            return str(path), True
        looks_like_path = raw.startswith(("/", ".", "~")) or "\\" in raw or raw.count("/") > 1
        if looks_like_path:
            raise ModelUnavailable(
                f"The model folder {raw} does not exist.",
                "Check the PRIVASCAN_MODEL setting: it must be an existing folder holding a downloaded "
                f"copy of {DEFAULT_MODEL}, or the hub id {DEFAULT_MODEL}.",
            )
        return raw, False

    def _have_token(self) -> bool:
        if self.token:
            return True
        from huggingface_hub import get_token

        return bool(get_token())

    @property
    def input_size(self) -> int:
        """The side of the square crop the vision tower sees (448 for MedSigLIP-448; the checkpoint's own once loaded)."""
        if self.model is None:
            return DEFAULT_INPUT_SIZE
        return int(self.model.config.vision_config.image_size)

    def describe(self) -> str:
        # Every visitor sees this line: name a hub id, but not the server's folders.
        # A Message: English as a str, the reader's language on the page.
        local = os.path.isabs(self.model_id_or_path) or os.path.exists(self.model_id_or_path)
        where = Message(N_("local copy")) if local else self.model_id_or_path
        if self.model is None:
            return Message(N_("MedSigLIP (%(where)s), not loaded"), where=where)
        vision = self.model.config.vision_config
        if vision.hidden_size == 1152 and vision.num_hidden_layers == 27:
            label = f"MedSigLIP-{vision.image_size}"
        else:
            label = Message(N_("SigLIP-compatible model (%(layers)d layers, width %(width)d, %(size)d px)"),
                            layers=vision.num_hidden_layers, width=vision.hidden_size, size=vision.image_size)
        description = Message(N_("%(model)s (%(where)s) on %(device)s"), model=label, where=where, device=str(self.device))
        if self.model is not None and is_quantized(self.model.vision_model):
            if self.int8_not_faster:
                fp32_s, int8_s = self.int8_timing
                return Message(N_("%(model)s, int8 (not faster than fp32 on this host: %(int8)s ms against %(fp32)s ms per "
                                  "encoder layer; unset PRIVASCAN_INT8)"), model=description, int8=f"{int8_s * 1000:.0f}",
                               fp32=f"{fp32_s * 1000:.0f}")
            return Message(N_("%(model)s, int8"), model=description)
        return description

    def _require_loaded(self) -> None:
        if self.model is None:
            raise ModelUnavailable(
                Message(N_("The classifier is not loaded yet.")),
                Message(N_("Wait for start-up to finish; if loading failed, the start-up message says why.")),
            )

    # ------------------------------------------------------------- text side
    @staticmethod
    def _bank_key(bank: PromptBank, template_set: TemplateSet) -> tuple[str, str]:
        content = bank.content_hash
        if not content:  # hand-built banks have no file hash: key by what is embedded
            digest = hashlib.sha256()
            for condition in bank.conditions:
                digest.update(repr((condition.id, condition.descriptions)).encode())
            digest.update(repr(template_set.templates).encode())
            content = "prompts:" + digest.hexdigest()[:16]
        return content, template_set.id

    def prepare(self, bank: PromptBank, template_set: TemplateSet) -> None:
        """Compute and keep the class (and scope) embeddings of one bank and template set (start-up).

        Also the one place that writes them to the embedding cache: prepare runs
        at start-up (the model loader, ``privascan prepare``), never for a request.
        """
        embeddings = self.text_embeddings(bank, template_set)
        about = {"bank": bank.name, "bank_hash": bank.content_hash, "template_set": template_set.id}
        with self._lock:
            self._persist("bank", self._bank_identity(bank, template_set),
                          tuple(c.id for c in bank.conditions), embeddings, about)
        scope = self.scope_embeddings(bank)
        if scope is not None:
            with self._lock:
                self._persist("scope", self._scope_identity(bank.scope.prompts), bank.scope.prompts, scope,
                              {"bank": bank.name, "bank_hash": bank.content_hash, "scope": True})

    def scope_embeddings(self, bank: PromptBank) -> "torch.Tensor | None":
        """(n_scope_prompts, d) unit-norm embeddings of the bank's scope descriptions, or None without any.

        Each description is its own prompt (no templates): they already are
        whole captions ("A chest radiograph.").
        """
        if not bank.scope.enabled:
            return None
        self._require_loaded()
        prompts = bank.scope.prompts
        key = self._scope_key(prompts)
        cached = self._text_cache.get(key)
        if cached is not None and cached[0] == prompts:
            return cached[1]
        with self._lock:
            cached = self._text_cache.get(key)
            if cached is not None and cached[0] == prompts:
                return cached[1]
            if self.model.text_model is None:
                raise TextTowerReleased(
                    f"The scope descriptions of bank '{bank.name}' were not prepared before the text model was released.",
                    "Restart PrivaScan; every bank is prepared at start-up.",
                )
            embeddings = self._embed_prompts(list(prompts))
            self._text_cache[key] = (prompts, embeddings)
            return embeddings

    def scope_probabilities(self, image_features: "torch.Tensor", bank: PromptBank):
        """Softmax over the scope prompts for each pooled embedding (B, d): numpy rows, or None."""
        import torch

        text = self.scope_embeddings(bank)
        if text is None:
            return None
        with torch.no_grad():
            logits, _ = self.logits_from_image_features(image_features.detach(), text)
            return logits.to("cpu", torch.float64).softmax(-1).numpy()

    def text_embeddings(self, bank: PromptBank, template_set: TemplateSet) -> "torch.Tensor":
        """(n_conditions, d) unit-norm class embeddings, prompt-ensembled, computed once."""
        self._require_loaded()
        key = self._bank_key(bank, template_set)
        condition_ids = tuple(condition.id for condition in bank.conditions)
        cached = self._text_cache.get(key)
        if cached is not None and cached[0] == condition_ids:
            return cached[1]
        with self._lock:
            cached = self._text_cache.get(key)
            if cached is not None and cached[0] == condition_ids:
                return cached[1]
            if self.model.text_model is None:
                # Reloading a 1.8 GB tower mid-session would double memory and stall the
                # queue for minutes; banks are known at start-up, so this is a wiring bug.
                raise TextTowerReleased(
                    f"The prompt bank '{bank.name}' (template set '{template_set.id}') was not prepared "
                    "before the text model was released.",
                    "Restart PrivaScan; every bank and template set is prepared at start-up.",
                )
            embeddings = self._embed_bank(bank, template_set)
            self._text_cache[key] = (condition_ids, embeddings)
            return embeddings

    def _embed_bank(self, bank: PromptBank, template_set: TemplateSet) -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        prompts: list[str] = []
        spans: list[tuple[int, int]] = []
        for condition in bank.conditions:
            start = len(prompts)
            prompts.extend(bank.prompts_for(condition, template_set))
            spans.append((start, len(prompts)))
            if len(prompts) == start:
                raise ValueError(f"condition '{condition.id}' of bank '{bank.name}' has no prompt")
        every_prompt = self._embed_prompts(prompts)
        with torch.no_grad():
            per_class = torch.stack([every_prompt[a:b].mean(0) for a, b in spans])
            return F.normalize(per_class, dim=-1)

    def _embed_prompts(self, prompts: list[str]) -> "torch.Tensor":
        """(n, d) unit-norm text embeddings, in batches of TEXT_BATCH."""
        import torch
        import torch.nn.functional as F

        tokenizer = self.processor.tokenizer
        features = []
        # no_grad, not inference_mode: the explainer uses these embeddings under autograd,
        # which refuses inference-mode tensors.
        with torch.no_grad():
            for start in range(0, len(prompts), TEXT_BATCH):
                tokens = tokenizer(
                    prompts[start : start + TEXT_BATCH],
                    padding="max_length",
                    max_length=TEXT_MAX_LENGTH,
                    truncation=True,
                    return_tensors="pt",
                )
                # input_ids only: SigLIP's text tower was trained without an attention mask
                # and pools the last (padding) position, so a mask would change its output.
                output = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device))
                features.append(F.normalize(output.pooler_output.float(), dim=-1))
            return torch.cat(features)

    def release_text_tower(self) -> None:
        """Drop the text tower (about half the weights); cached embeddings stay usable."""
        self._require_loaded()
        with self._lock:
            if self._released:
                return
            import torch

            self.model.text_model = None  # already None after a warm start (never loaded)
            # The weights are memory-mapped views of the safetensors file, which
            # stays mapped (and its touched pages resident) while any tensor views
            # it. Copy what remains into the process's own memory so the mapping,
            # and the text tower's 1.8 GB with it, can go; each copied tensor's
            # file pages are let go at once, so the peak holds one copy, not two.
            mapped = file_mapped_ranges()
            if self.int8:
                self._quantize_at_start_up(mapped)  # first: the frozen layers' fp32 weights are never copied
            with torch.no_grad():
                for tensor in [*self.model.parameters(), *self.model.buffers()]:
                    old = tensor.data
                    tensor.data = old.clone()
                    if mapped and old.device.type == "cpu":
                        drop_file_pages(old.data_ptr(), old.numel() * old.element_size(), mapped)
                    del old
            gc.collect()
            release_freed_memory()
            if self.device == "cuda":
                torch.cuda.empty_cache()
            self._released = True

    def _quantize_at_start_up(self, mapped: list[tuple[int, int]]) -> None:
        """Quantize the frozen layers, timing one encoder layer in fp32 before and in int8 after (logged).

        Runs while the weights are still views of the safetensors mapping:
        each layer's fp32 weights are read once, to quantize it, and their
        file pages are let go as soon as its int8 replacement is in place, so
        the fp32 tower is never resident whole and the start-up peak stays
        near the int8 steady figure.
        """
        if self.device != "cpu":
            log.warning("PRIVASCAN_INT8 is for CPUs; on %s the model stays in fp32", self.device)
            self.int8 = False
            return
        vision = self.model.vision_model
        layers = vision.encoder.layers
        tokens = (self.input_size // vision.config.patch_size) ** 2
        fp32_s = time_one_layer(layers[0], tokens, vision.config.hidden_size)

        def let_go(tensors) -> None:
            for tensor in tensors:
                if mapped and tensor.device.type == "cpu":
                    drop_file_pages(tensor.data_ptr(), tensor.numel() * tensor.element_size(), mapped)

        quantize_frozen_layers(vision, released=let_go)
        int8_s = time_one_layer(layers[0], tokens, vision.config.hidden_size)
        self.int8_timing = (fp32_s, int8_s)
        log.info("int8 on this host: one encoder layer %.3f s in int8, %.3f s in fp32: %s", int8_s, fp32_s,
                 "int8 is faster" if int8_s < fp32_s else "int8 is NOT faster")

    @property
    def int8_not_faster(self) -> bool:
        return self.int8_timing is not None and self.int8_timing[1] >= self.int8_timing[0]

    def int8_copy(self, pairs: Sequence[tuple[PromptBank, TemplateSet]]) -> "MedSigLIPClassifier":
        """Another classifier on a copy of these weights with the frozen layers in int8 (CPU).

        For comparing the two in one process (``privascan eval --compare-int8``,
        the benchmark): the same quantization as PRIVASCAN_INT8, the same text
        embeddings (computed here first for ``pairs``), the same processor.
        """
        import copy

        self._require_loaded()
        with self._lock:
            for bank, template_set in pairs:
                self.text_embeddings(bank, template_set)
                self.scope_embeddings(bank)
            twin = MedSigLIPClassifier(self.model_id_or_path, token=self.token, device="cpu", int8=True)
            vision = quantize_frozen_layers(copy.deepcopy(self.model.vision_model).to("cpu"))
            twin.model = vision_only_model(self.model.config, vision, float(self.model.logit_scale.reshape(-1)[0]),
                                           float(self.model.logit_bias.reshape(-1)[0]))
            twin.processor, twin.device = self.processor, "cpu"
            twin._scale, twin._logit_bias = self._scale.to("cpu"), self._logit_bias.to("cpu")
            twin._text_cache = {key: (rows, tensor.to("cpu")) for key, (rows, tensor) in self._text_cache.items()}
            twin._released = True
            return twin

    @property
    def logit_scale(self) -> float:
        """exp(t'): the factor SigLIP multiplies cosines by (an adapter's prototypes reuse it)."""
        self._require_loaded()
        return float(self._scale)

    @property
    def logit_bias(self) -> float:
        self._require_loaded()
        return float(self._logit_bias)

    # ----------------------------------------------------------- image side
    @property
    def vision_model(self):
        self._require_loaded()
        return self.model.vision_model

    def pixel_values(self, crop: Image.Image) -> "torch.Tensor":
        """The (1, 3, 448, 448) tensor the vision tower sees for a crop (shared with the explainer)."""
        return self.pixel_values_batch([crop])

    def pixel_values_batch(self, crops: Sequence[Image.Image]) -> "torch.Tensor":
        self._require_loaded()
        import torch

        # The core cuts every crop as a padded square (webapp.cropping.square_crop, as
        # Google's serving code pads); the processor would stretch anything else when it
        # resizes to 448 (bilinear) and maps [0, 255] to (-1, 1), so refuse it instead.
        for crop in crops:
            if crop.width != crop.height:
                raise ValueError(
                    f"MedSigLIP scores square crops; got {crop.width}x{crop.height}. "
                    "Cut it with webapp.cropping.square_crop first."
                )
        batch = self.processor.image_processor(images=list(crops), return_tensors="pt")["pixel_values"]
        return batch.to(self.device, dtype=torch.float32)

    def logits_from_image_features(
        self, image_features: "torch.Tensor", text_embeddings: "torch.Tensor"
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(logits, cosines) for pooled image features (B, d) against class embeddings (n, d)."""
        import torch.nn.functional as F

        similarities = F.normalize(image_features, dim=-1) @ text_embeddings.T
        logits = similarities * self._scale + self._logit_bias
        return logits, similarities

    def classify(self, crop: Image.Image, bank: PromptBank, template_set: TemplateSet) -> Scores:
        """Score a square crop against every condition of the bank (vision tower only)."""
        return self.classify_batch([crop], bank, template_set)[0]

    def classify_batch(
        self, crops: Sequence[Image.Image], bank: PromptBank, template_set: TemplateSet
    ) -> list[Scores]:
        """Score several crops in one vision forward (live frames)."""
        if not crops:
            return []
        self.text_embeddings(bank, template_set)  # a bank that was not prepared fails before the vision pass
        return self.scores_from_embeddings(self.embed_crops(crops), bank, template_set)

    def embed_crops(self, crops: Sequence[Image.Image]) -> "torch.Tensor":
        """Pooled image embeddings (B, d) of square crops: the one vision forward pass.

        With ``scores_from_embeddings`` it lets ``privascan eval`` score one
        crop against two banks or template sets without a second vision pass.
        """
        import torch

        pixels = self.pixel_values_batch(crops)
        with torch.inference_mode(), half_precision(self.device, self.cuda_half):
            return self.model.get_image_features(pixel_values=pixels).pooler_output.float()

    def scores_from_embeddings(
        self, image_features: "torch.Tensor", bank: PromptBank, template_set: TemplateSet
    ) -> list[Scores]:
        """Score embeddings from ``embed_crops`` against a bank: text side only, no vision pass."""
        import torch

        text = self.text_embeddings(bank, template_set)
        condition_ids = [condition.id for condition in bank.conditions]
        with torch.inference_mode():
            logits, similarities = self.logits_from_image_features(image_features, text)
        scope = self.scope_probabilities(image_features, bank)  # the same embeddings: no second pass
        scores = [build_scores(condition_ids, logits[i], similarities[i]) for i in range(image_features.shape[0])]
        for row, score in zip(unit_embeddings(image_features), scores):
            score.embedding = row
        if scope is not None:
            for row, score in zip(scope, scores):
                score.scope_probabilities = row
        return scores
