"""A clinic's adapter: a linear scorer on the model's frozen image embeddings, and its file.

``privascan adapt`` fits one of two methods on a clinic's labelled photos
(``webapp/evaluation/adapting.py``); both end as the same thing, a linear map
from the L2-normalised image embedding to one logit per condition it knows:

- ``linear_probe``: regularised logistic regression, ``W = coef``, ``b = intercept``;
- ``prototypes``: each condition's mean image embedding mixed with the bank's
  text embedding, ``W = scale * ((1 - alpha) * text + alpha * prototype)``.

So the app, ``privascan eval`` and Grad-CAM score with one formula
(``logits = W @ normalize(f) + b``), and temperature calibration can apply
on top of its logits exactly as on the zero-shot ones.

The file is one safetensors file: tensors ``weight`` (k, d) and ``bias`` (k),
and a TOML header in its metadata (model fingerprint, bank hash, conditions,
method, fit date, validation figures). It holds no image, no file name and no
per-image embedding: only k class-level rows. It is written atomically (a
temporary file in the same folder, then a rename), so a failed write leaves
nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .interfaces import PromptBank, Scores

FORMAT = "privascan-adapter"
FORMAT_VERSION = 1
METHODS = ("linear_probe", "prototypes")
_HEADER_KEY = "privascan_adapter_toml"


class AdapterError(ValueError):
    """An adapter that cannot be used here, with a message saying why and what to do."""


def bank_hash(bank: PromptBank) -> str:
    """What an adapter is tied to: the bank file's content hash, or its prompts for a hand-built bank."""
    if bank.content_hash:
        return bank.content_hash
    digest = hashlib.sha256()
    for condition in bank.conditions:
        digest.update(repr((condition.id, condition.descriptions)).encode())
    for template_set in bank.template_sets:
        digest.update(repr((template_set.id, template_set.templates)).encode())
    return "prompts:" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class Adapter:
    method: str
    conditions: tuple[str, ...]  # bank order; one row of ``weight`` each
    weight: np.ndarray  # (k, d) float32
    bias: np.ndarray  # (k,) float32
    model_fingerprint: str
    bank: str
    bank_hash: str
    template_set: str
    fitted_at: str  # ISO 8601, UTC
    header: dict[str, Any] = field(default_factory=dict)  # everything else: hyperparameters, split, validation

    @property
    def adapter_id(self) -> str:
        """A short id of the weights, so a result can say which adapter scored it."""
        digest = hashlib.sha256()
        digest.update(self.method.encode())
        digest.update(np.ascontiguousarray(self.weight, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.bias, dtype=np.float32).tobytes())
        return digest.hexdigest()[:12]

    def describe(self) -> str:
        """One line for results and reports: method, id, conditions, fit date."""
        method = "linear probe" if self.method == "linear_probe" else "few-shot prototypes"
        return (
            f"adapter {self.adapter_id} ({method}, {len(self.conditions)} conditions, "
            f"fitted {self.fitted_at[:10]})"
        )

    def as_dict(self) -> dict:
        """What a result or API answer says about the adapter (no weights)."""
        return {
            "id": self.adapter_id,
            "method": self.method,
            "conditions": list(self.conditions),
            "fitted_at": self.fitted_at,
            "template_set": self.template_set,
        }

    # -------------------------------------------------------------- scoring
    def logits(self, features: np.ndarray) -> np.ndarray:
        """(B, d) raw image features -> (B, k) logits over ``conditions``."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim == 1:
            features = features[None, :]
        if features.shape[1] != self.weight.shape[1]:
            raise AdapterError(
                f"the adapter expects {self.weight.shape[1]}-dimensional embeddings, the model gives {features.shape[1]}"
            )
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit = features / np.maximum(norms, 1e-12)
        return unit @ self.weight.astype(np.float64).T + self.bias.astype(np.float64)

    def torch_logits(self, features):
        """The same map on a torch tensor, differentiable (Grad-CAM explains the adapter's logit)."""
        import torch
        import torch.nn.functional as F

        weight = torch.as_tensor(self.weight, dtype=features.dtype, device=features.device)
        bias = torch.as_tensor(self.bias, dtype=features.dtype, device=features.device)
        return F.normalize(features, dim=-1) @ weight.T + bias

    def scores(self, features: np.ndarray) -> list[Scores]:
        """``Scores`` over the adapter's conditions (bank order), one per row of features."""
        logits = self.logits(features)
        return [scores_from_logits(list(self.conditions), row) for row in logits]

    # -------------------------------------------------------------- checks
    def check_matches(self, model_fingerprint: str, bank: PromptBank, where: str = "the adapter") -> None:
        """Refuse to score with weights fitted for another model or another bank."""
        if model_fingerprint != self.model_fingerprint:
            raise AdapterError(
                f"{where} was fitted on the embeddings of another model ({self.model_fingerprint}); "
                f"this one is {model_fingerprint}. Fit a new adapter with `privascan adapt` for this model, "
                "or unset PRIVASCAN_ADAPTER."
            )
        if bank.name != self.bank or bank_hash(bank) != self.bank_hash:
            raise AdapterError(
                f"{where} was fitted for bank '{self.bank}' (hash {self.bank_hash}); the app's bank is "
                f"'{bank.name}' (hash {bank_hash(bank)}). Its conditions and text embeddings may differ: fit a "
                "new adapter with `privascan adapt`, or unset PRIVASCAN_ADAPTER."
            )
        missing = sorted(set(self.conditions) - {c.id for c in bank.conditions})
        if missing:
            raise AdapterError(f"{where} scores condition(s) {', '.join(missing)} that bank '{bank.name}' lacks.")


def scores_from_logits(condition_ids: list[str], logits: np.ndarray) -> Scores:
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    shifted = np.exp(logits - logits.max())
    return Scores(
        condition_ids=list(condition_ids),
        logits=logits,
        probabilities=shifted / shifted.sum(),
        # No cosine to one text prompt exists for a probe; NaN says "not defined" rather than a made-up number.
        similarities=np.full(logits.shape, np.nan),
    )


# ------------------------------------------------------------------ file


def header_toml(adapter: Adapter) -> str:
    """The TOML header: the identity fields first, then the fit's details."""
    top = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": adapter.method,
        "model_fingerprint": adapter.model_fingerprint,
        "bank": adapter.bank,
        "bank_hash": adapter.bank_hash,
        "template_set": adapter.template_set,
        "conditions": list(adapter.conditions),
        "fitted_at": adapter.fitted_at,
        "embedding_dim": int(adapter.weight.shape[1]),
        **adapter.header,
    }
    return to_toml(top)


def save_adapter(path: str | Path, adapter: Adapter) -> Path:
    """Write the adapter to ``path`` atomically; the folder must exist."""
    from safetensors.numpy import save

    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise AdapterError(f"--out {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise AdapterError(f"--out {path} is a folder; name the adapter file, e.g. clinic.adapter.safetensors")
    data = save(
        {"weight": np.ascontiguousarray(adapter.weight, dtype=np.float32),
         "bias": np.ascontiguousarray(adapter.bias, dtype=np.float32)},
        metadata={"format": FORMAT, _HEADER_KEY: header_toml(adapter)},
    )
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def load_adapter(path: str | Path) -> Adapter:
    """Read and validate an adapter file; every problem is an ``AdapterError`` naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    where = f"adapter {path}"
    if not path.is_file():
        raise AdapterError(f"{where} does not exist (PRIVASCAN_ADAPTER names a file from `privascan adapt`)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = set(handle.keys())
            if names != {"weight", "bias"}:
                raise AdapterError(f"{where} holds tensors {sorted(names)}, not an adapter's weight and bias")
            weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{where} is not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != FORMAT or _HEADER_KEY not in metadata:
        raise AdapterError(f"{where} is a safetensors file but not a PrivaScan adapter")
    try:
        header = tomllib.loads(metadata[_HEADER_KEY])
    except tomllib.TOMLDecodeError as exc:
        raise AdapterError(f"{where}: its header is not valid TOML ({exc})") from exc
    if header.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{where} has format version {header.get('format_version')!r}; this PrivaScan reads {FORMAT_VERSION}")
    identity = {}
    for key in ("method", "model_fingerprint", "bank", "bank_hash", "template_set", "fitted_at"):
        value = header.pop(key, None)
        if not isinstance(value, str) or not value:
            raise AdapterError(f"{where}: header field {key!r} is missing")
        identity[key] = value
    conditions = header.pop("conditions", None)
    if identity["method"] not in METHODS:
        raise AdapterError(f"{where}: unknown method {identity['method']!r}")
    if not isinstance(conditions, list) or len(conditions) < 2 or not all(isinstance(c, str) for c in conditions):
        raise AdapterError(f"{where}: header must list at least two conditions")
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or weight.shape[0] != len(conditions):
        raise AdapterError(f"{where}: weight {weight.shape} and bias {bias.shape} do not fit {len(conditions)} conditions")
    if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
        raise AdapterError(f"{where}: weights are not finite numbers")
    for key in ("format", "format_version", "embedding_dim"):
        header.pop(key, None)
    return Adapter(conditions=tuple(conditions), weight=weight, bias=bias, header=header, **identity)


def fingerprint_for_check(model_id_or_path: str, where: str) -> str:
    """The model's fingerprint, or an ``AdapterError`` saying why the adapter cannot be checked against it."""
    from .fingerprint import FingerprintUnavailable, model_fingerprint

    try:
        return model_fingerprint(model_id_or_path)
    except FingerprintUnavailable as exc:
        raise AdapterError(f"{where} cannot be checked against the model: {exc}") from exc


def install_adapter(registry, config: dict) -> Adapter | None:
    """Load ``config["ADAPTER"]`` (PRIVASCAN_ADAPTER) into ``registry.adapters``, refusing a mismatched one.

    Called at start-up, after the banks (and their overrides) are registered:
    an adapter for another model fingerprint or bank hash stops start-up with
    a message, as a bad bank-overrides file does, rather than scoring wrongly.
    """
    path = config.get("ADAPTER")
    if not path:
        return None
    adapter = load_adapter(path)
    where = f"adapter {Path(path).expanduser()}"
    if adapter.bank not in registry.banks:
        raise AdapterError(
            f"{where} was fitted for bank '{adapter.bank}', which no installed plugin provides "
            f"(banks: {', '.join(sorted(registry.banks))})"
        )
    adapter.check_matches(fingerprint_for_check(config["MODEL"], where), registry.banks[adapter.bank], where)
    for clinical_app in registry.apps.values():
        classifier = registry.classifiers.get(clinical_app.classifier)
        if clinical_app.bank == adapter.bank and not callable(getattr(classifier, "embed_crops", None)):
            raise AdapterError(
                f"{where}: the {clinical_app.name} app's classifier {clinical_app.classifier} exposes no image "
                "embeddings, so an adapter cannot score for it"
            )
    registry.adapters[adapter.bank] = adapter
    return adapter


# ------------------------------------------------------------------ TOML writing
# The header is a few flat tables of strings, numbers and lists; tomllib only
# reads, so this small writer covers exactly those types (and round-trips).


def to_toml(data: dict) -> str:
    lines: list[str] = []
    _write_table(lines, data, ())
    return "\n".join(lines).strip() + "\n"


def _write_table(lines: list[str], table: dict, prefix: tuple[str, ...]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
    for key, value in scalars.items():
        if value is None:
            continue  # TOML has no null: an undefined figure is simply absent
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _write_table(lines, value, (*prefix, key))


def _key(key: str) -> str:
    key = str(key)
    bare = key and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in key)
    return key if bare else _string(key)


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
