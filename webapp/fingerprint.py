"""Which exact weights a model id or folder names, as one short string.

Files derived from a model (an adapter fitted on its embeddings, cached text
embeddings) are valid only for the weights they were made with, and a hub id
or a folder path says nothing about that: the same id moves to new commits, a
folder can be overwritten. The fingerprint is

- for a hub id, the snapshot commit of the locally cached copy
  (``hub:<id>@<commit>``), read from the Hugging Face cache without contacting
  the hub;
- for a local folder, a SHA-256 over each safetensors file's name, size and
  header (``sha256:<hex>``). The header lists every tensor's name, dtype, shape
  and byte offsets, so any change of architecture or of a tensor's layout
  changes it, without reading gigabytes of weights.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

# A safetensors file starts with an 8-byte little-endian header length; real
# headers are tens of KB, so anything far larger is not a safetensors file.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class FingerprintError(ValueError):
    """The model's weights cannot be identified (not cached, no safetensors, unreadable)."""


def model_fingerprint(model_id_or_path: str) -> str:
    """``hub:<id>@<commit>`` for a cached hub model, ``sha256:<hex>`` for a local folder."""
    path = Path(str(model_id_or_path)).expanduser()
    if path.is_dir():
        return _folder_fingerprint(path)
    return _hub_fingerprint(str(model_id_or_path))


def _folder_fingerprint(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FingerprintError(f"the model folder {folder} holds no .safetensors file to identify its weights by")
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        with file.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise FingerprintError(f"{file.name} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", raw)
            if length > min(size - 8, _MAX_HEADER_BYTES):
                raise FingerprintError(f"{file.name} is not a safetensors file (bad header length)")
            header = handle.read(length)
        digest.update(f"{file.name}\0{size}\0".encode())
        digest.update(header)
    return "sha256:" + digest.hexdigest()


def _hub_fingerprint(repo_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(cached, str):
        raise FingerprintError(
            f"{repo_id} is not in the local Hugging Face cache, so its weights cannot be identified; "
            "load the model once (or point at a local folder)"
        )
    # .../models--org--name/snapshots/<commit>/config.json
    commit = Path(cached).parent.name
    return f"hub:{repo_id}@{commit}"
