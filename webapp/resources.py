"""Where PrivaScan's own data folders are: in the source checkout, or inside the installed package.

The checkout keeps ``templates/`` and ``prompts/`` at its top level; the wheel
carries them as ``webapp/templates`` and ``webapp/prompts`` (setup.py maps
them there). Static files and plugin templates already live inside their
packages, so they need nothing here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped_folder(name: str) -> Path:
    """``templates`` or ``prompts``: the installed copy when there is one, else the checkout's."""
    installed = PACKAGE / name
    return installed if installed.is_dir() else PACKAGE.parent / name
