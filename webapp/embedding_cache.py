"""Bank text embeddings kept between runs, so a restart needs no text tower.

Embedding a bank's prompts with MedSigLIP's text tower takes minutes on a CPU
(288 s for dermatology's 318 clinical prompts on the 2-core reference
machine), and until then nobody can analyse anything. The result depends only
on the model's weights and on the exact prompts, so it is stored once and
read back at every later start.

What is stored is model-derived, never user data: the (conditions, d) class
embeddings of one (bank, template set), or the scope prompts' embeddings, plus
the model's logit scale and bias (so a warm start needs no text weights at
all). Entries are written only at start-up (the model loader's thread and
``privascan prepare``), never while a request is handled.

Storage sits behind a two-method backend (``CacheBackend``: ``get(key)``,
``put(key, data)``); the default is a folder (``FolderBackend``). Another
backend (a shared Redis, so a new worker reads what the first one published)
only has to move bytes: every entry carries its own identity, shape and
checksum, and ``EmbeddingCache`` validates all of them on read, so a corrupt,
truncated or stale entry is reported and recomputed, never used.

Entry layout (no pickle: nothing read back can run code)::

    MAGIC | u32 little-endian header length | header (UTF-8 JSON) | float32 little-endian payload
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"PRIVASCAN-EMBEDDINGS\x00"
FORMAT = 1
HEADER_LIMIT = 16 * 1024 * 1024  # a header lists condition ids and the identity: kilobytes
ENTRY_SUFFIX = ".emb"
DISABLED = {"off", "none", "0", "false", "no"}


class CacheEntryInvalid(ValueError):
    """Bytes under a key that are not a valid entry for what was asked (corrupt, truncated, stale)."""


@runtime_checkable
class CacheBackend(Protocol):
    """Where entries are kept: opaque bytes under a short ASCII key ([a-z0-9-])."""

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None when there are none (or they cannot be read)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there; readers never see half an entry."""


def default_cache_folder() -> Path:
    """``$XDG_CACHE_HOME/privascan/embeddings``, else ``~/.cache/privascan/embeddings``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "privascan" / "embeddings"


class FolderBackend:
    """One file per key in a folder; each write is a temp file in that folder, then ``os.replace``.

    The rename is atomic on one file system, so a reader (another process
    starting at the same time) sees the old entry or the new one, never a
    partial file; a crash mid-write leaves only a stray temp file.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.folder / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("embedding cache: cannot read %s (%s); it will be recomputed", self.path(key), exc)
            return None

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise

    def __repr__(self) -> str:
        return f"FolderBackend({str(self.folder)!r})"


def _check_key(key: str) -> None:
    if not key or len(key) > 128 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in key):
        raise ValueError(f"not a cache key: {key!r}")


@dataclass
class CachedEmbeddings:
    """A validated entry: unit-norm rows (float32) in ``rows`` order, and the model's logit scale and bias."""

    rows: tuple[str, ...]
    vectors: np.ndarray
    logit_scale: float  # the raw parameter t' (the model applies exp)
    logit_bias: float
    header: dict


def entry_key(kind: str, identity: dict) -> str:
    """``kind-<sha256 of the identity>``: the identity names everything the embeddings depend on."""
    _check_key(kind)
    digest = hashlib.sha256(_canonical(identity)).hexdigest()[:40]
    return f"{kind}-{digest}"


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_entry(
    identity: dict, rows: tuple[str, ...], vectors: np.ndarray, *, logit_scale: float, logit_bias: float, about: dict | None = None
) -> bytes:
    """An entry's bytes: header (identity, rows, shape, checksum, scale, bias) and the float32 payload."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if matrix.ndim != 2 or matrix.shape[0] != len(rows):
        raise ValueError(f"{matrix.shape} embeddings for {len(rows)} rows")
    payload = matrix.tobytes()
    header = {
        "format": FORMAT,
        "identity": identity,
        "rows": list(rows),
        "shape": list(matrix.shape),
        "dtype": "float32-le",
        "sha256": hashlib.sha256(payload).hexdigest(),
        # float(float32) is exact in a Python float, and JSON round-trips it exactly.
        "logit_scale": float(np.float32(logit_scale)),
        "logit_bias": float(np.float32(logit_bias)),
        "about": about or {},  # for a person reading the file: bank name, template set, when
    }
    encoded = _canonical(header)
    return MAGIC + struct.pack("<I", len(encoded)) + encoded + payload


def decode_entry(data: bytes, identity: dict) -> CachedEmbeddings:
    """Validate ``data`` against the identity asked for; raise ``CacheEntryInvalid`` saying what is wrong."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise CacheEntryInvalid("not an embeddings entry")
    start = len(MAGIC) + 4
    (length,) = struct.unpack("<I", data[len(MAGIC) : start])
    if length > HEADER_LIMIT or start + length > len(data):
        raise CacheEntryInvalid("truncated header")
    try:
        header = json.loads(data[start : start + length])
    except ValueError as exc:
        raise CacheEntryInvalid("unreadable header") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CacheEntryInvalid(f"format {header.get('format') if isinstance(header, dict) else '?'} is not {FORMAT}")
    if header.get("identity") != identity:
        raise CacheEntryInvalid("made for other weights or other prompts (stale)")
    payload = data[start + length :]
    try:
        rows = tuple(str(r) for r in header["rows"])
        shape = tuple(int(n) for n in header["shape"])
        scale, bias = float(header["logit_scale"]), float(header["logit_bias"])
        checksum = str(header["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheEntryInvalid("incomplete header") from exc
    if header.get("dtype") != "float32-le" or len(shape) != 2 or shape[0] != len(rows) or shape[1] < 1:
        raise CacheEntryInvalid(f"shape {shape} does not fit {len(rows)} rows")
    if len(payload) != shape[0] * shape[1] * 4:
        raise CacheEntryInvalid(f"{len(payload)} payload bytes for shape {shape} (truncated)")
    if hashlib.sha256(payload).hexdigest() != checksum:
        raise CacheEntryInvalid("checksum mismatch (corrupt)")
    vectors = np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.isfinite(vectors).all() or not math.isfinite(scale) or not math.isfinite(bias) or np.abs(norms - 1).max() > 1e-3:
        raise CacheEntryInvalid("values are not unit-norm finite embeddings")
    return CachedEmbeddings(rows, vectors, scale, bias, header)


class EmbeddingCache:
    """Validated reads and start-up writes of embedding entries over any ``CacheBackend``."""

    def __init__(self, backend: CacheBackend):
        self.backend = backend

    def describe(self) -> str:
        folder = getattr(self.backend, "folder", None)
        return str(folder) if folder is not None else repr(self.backend)

    def load(self, kind: str, identity: dict) -> CachedEmbeddings | None:
        """The entry for ``identity``, or None when it is missing or invalid (then it is recomputed)."""
        key = entry_key(kind, identity)
        try:
            data = self.backend.get(key)
        except Exception as exc:  # noqa: BLE001 - an unreachable cache means computing, not failing
            log.warning("embedding cache %s: cannot read %s (%s); computing instead", self.describe(), key, exc)
            return None
        if data is None:
            return None
        try:
            return decode_entry(data, identity)
        except CacheEntryInvalid as exc:
            log.warning("embedding cache %s: entry %s is %s; it is recomputed and replaced", self.describe(), key, exc)
            return None

    def store(
        self, kind: str, identity: dict, rows, vectors: np.ndarray, *, logit_scale: float, logit_bias: float, about: dict | None = None
    ) -> bool:
        """Write an entry (start-up only); False, with a warning, when the backend refuses."""
        key = entry_key(kind, identity)
        data = encode_entry(
            identity, tuple(rows), vectors, logit_scale=logit_scale, logit_bias=logit_bias,
            about={**(about or {}), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
        try:
            self.backend.put(key, data)
        except Exception as exc:  # noqa: BLE001 - a read-only cache folder must not stop start-up
            log.warning("embedding cache %s: cannot store %s (%s); the next start computes it again", self.describe(), key, exc)
            return False
        return True


def cache_from_config(config: dict) -> EmbeddingCache | None:
    """The cache ``PRIVASCAN_CACHE_DIR`` names (``config["CACHE_DIR"]``), the default folder, or None when set to ``off``."""
    setting = config.get("CACHE_DIR")
    if setting is not None and str(setting).strip().lower() in DISABLED:
        return None
    folder = Path(str(setting)).expanduser() if setting else default_cache_folder()
    return EmbeddingCache(FolderBackend(folder))
