"""Demo mode: a small random-weight model so the interface can be tried without the gated weights.

Only when the operator asks for it (PRIVASCAN_DEMO_MODEL=1): the MedSigLIP
plugin then registers its classifier on this model instead of ``MODEL``, and
every page carries a banner saying the results are meaningless.
"""

from __future__ import annotations

import os
from pathlib import Path


def demo_model_directory() -> str:
    """Build (once) and return the directory of the random demo model.

    It is model data we generate ourselves, never user data, kept in the
    user's cache directory so the project tree stays clean.
    """
    from .tiny_model import build_tiny_siglip

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "privascan" / "demo-model"
    if not (base / "config.json").exists():
        build_tiny_siglip(base)
    return str(base)
