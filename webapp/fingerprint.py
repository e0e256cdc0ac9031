"""A short, stable name for one exact set of model weights.

Anything derived from a model's weights and kept between runs (the bank's text
embeddings, a trained adapter) is only valid for the weights that made it; this
fingerprint is the key that says so. It is computed without reading the whole
checkpoint (gigabytes) and without contacting the hub:

* a hub id resolves to the commit of its snapshot in the local Hugging Face
  cache (the commit names the exact files);
* a local folder is hashed from its safetensors files: each file's name, size
  and header (tensor names, dtypes, shapes, offsets), plus the first and last
  bytes of every tensor (all of a small one). Header and size alone are
  identical for two fine-tunes of one architecture; the samples tell them
  apart, even when only one tensor (a head, a bias) was retrained. Reading
  them takes well under a second for MedSigLIP's 3.5 GB.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

SAMPLE_BYTES = 1024  # read from the start and from the end of every tensor
HEADER_LIMIT = 100 * 1024 * 1024  # safetensors caps its JSON header at 100 MB


class FingerprintUnavailable(LookupError):
    """The weights cannot be named: no such folder, no safetensors, or the hub id is not cached locally."""


def model_fingerprint(model_id_or_path: str, *, revision: str = "main", cache_dir: str | None = None) -> str:
    """``"hub:<repo id>@<commit>"`` for a cached hub id, ``"local:<sha256>"`` for a folder.

    Raises ``FingerprintUnavailable`` when the weights cannot be named.
    """
    raw = str(model_id_or_path)
    path = Path(raw).expanduser()
    if path.exists():
        return "local:" + folder_digest(path)
    return f"hub:{raw}@{hub_snapshot_commit(raw, revision=revision, cache_dir=cache_dir)}"


def hub_snapshot_commit(repo_id: str, *, revision: str = "main", cache_dir: str | None = None) -> str:
    """The commit of ``repo_id``'s snapshot in the local Hugging Face cache (never the network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        raise FingerprintUnavailable(f"{repo_id} is not in the local Hugging Face cache") from exc
    return Path(snapshot).name  # snapshots/<commit>


def folder_digest(folder: Path) -> str:
    """sha256 over every safetensors file's name, size, header and each tensor's first and last bytes."""
    if not folder.is_dir():
        raise FingerprintUnavailable(f"{folder} is not a folder")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FingerprintUnavailable(f"{folder} holds no safetensors file")
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise FingerprintUnavailable(f"{file.name} is not a safetensors file")
            (header_length,) = struct.unpack("<Q", head)
            if header_length > min(HEADER_LIMIT, size - 8):
                raise FingerprintUnavailable(f"{file.name} has no valid safetensors header")
            header = handle.read(header_length)
            digest.update(header)
            try:
                tensors = json.loads(header)
            except ValueError as exc:
                raise FingerprintUnavailable(f"{file.name} has no valid safetensors header") from exc
            data_start = 8 + header_length
            spans = sorted(
                tuple(entry["data_offsets"]) for name, entry in tensors.items()
                if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
            )
            for begin, end in spans:
                for offset, length in _samples(begin, end):
                    handle.seek(data_start + offset)
                    digest.update(handle.read(length))
    return digest.hexdigest()


def _samples(begin: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) of the bytes read from one tensor: all of it if small, else its head and tail."""
    if end - begin <= 2 * SAMPLE_BYTES:
        return [(begin, end - begin)]
    return [(begin, SAMPLE_BYTES), (end - SAMPLE_BYTES, SAMPLE_BYTES)]
