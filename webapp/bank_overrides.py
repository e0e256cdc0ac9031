"""Bank overrides: a clinic's own alert thresholds, kept apart from the shipped bank.

``privascan eval --fit-thresholds`` writes such a file from the clinic's
labelled images; the app reads it at start-up from ``PRIVASCAN_BANK_OVERRIDES``
(config key ``BANK_OVERRIDES``) and replaces the named conditions'
``alert_threshold`` in the registry's bank. The file::

    bank = "dermatology"          # optional: the default clinical app's bank

    [thresholds]
    melanoma = 0.18               # a probability in [0, 1]

    [calibration]                 # optional, from ``privascan eval --fit-calibration``
    temperature = 1.73            # softmax(logits / T): the app shows calibrated probabilities

Every mistake (unknown bank or condition, a value outside [0, 1], an unknown
key) stops start-up with a message naming the file and the entry, so a
mistyped threshold never silently leaves the shipped one in place.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .interfaces import PromptBank

ALLOWED_KEYS = {"bank", "thresholds", "calibration"}


class BankOverridesError(ValueError):
    """An overrides file that cannot be applied, with the file and entry named."""


@dataclass(frozen=True)
class BankOverrides:
    bank: str | None  # None: the default clinical app's bank
    thresholds: dict[str, float]
    temperature: float | None = None  # None: uncalibrated


def load_overrides(path: str | Path) -> BankOverrides:
    """Read and check the file's shape (not yet against a bank)."""
    path = Path(path).expanduser()
    where = f"bank overrides {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BankOverridesError(f"{where}: file not found (PRIVASCAN_BANK_OVERRIDES)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BankOverridesError(f"{where}: cannot be read as TOML ({exc})") from exc
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        raise BankOverridesError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: bank, [thresholds], [calibration])")
    bank = data.get("bank")
    if bank is not None and (not isinstance(bank, str) or not bank):
        raise BankOverridesError(f"{where}: bank must be a bank name, e.g. bank = \"dermatology\"")
    raw = data.get("thresholds", {})
    if not isinstance(raw, dict):
        raise BankOverridesError(f"{where}: thresholds must be a table: [thresholds] then melanoma = 0.18")
    thresholds: dict[str, float] = {}
    for condition_id, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise BankOverridesError(f"{where}: threshold for {condition_id!r} is {value!r}; it must be a number in [0, 1]")
        thresholds[condition_id] = float(value)
    calibration = data.get("calibration", {})
    if not isinstance(calibration, dict) or set(calibration) - {"temperature"}:
        raise BankOverridesError(f"{where}: [calibration] holds only temperature = <a positive number>")
    temperature = calibration.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature) or not 0.01 <= temperature <= 100
    ):
        raise BankOverridesError(f"{where}: calibration temperature is {temperature!r}; it must be a number in [0.01, 100]")
    return BankOverrides(bank, thresholds, None if temperature is None else float(temperature))


def with_thresholds(bank: PromptBank, thresholds: dict[str, float], where: str = "overrides") -> PromptBank:
    """A copy of ``bank`` whose named conditions carry the given ``alert_threshold``s.

    The content hash is kept: thresholds do not change the prompts, so cached
    text embeddings stay valid.
    """
    known = {condition.id for condition in bank.conditions}
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise BankOverridesError(
            f"{where}: bank '{bank.name}' has no condition {', '.join(repr(u) for u in unknown)} "
            f"(its conditions: {', '.join(sorted(known))})"
        )
    for condition_id, value in thresholds.items():
        if not 0.0 <= value <= 1.0:
            raise BankOverridesError(f"{where}: threshold for {condition_id!r} is {value!r}; it must be in [0, 1]")
    conditions = tuple(
        dataclasses.replace(c, alert_threshold=float(thresholds[c.id])) if c.id in thresholds else c
        for c in bank.conditions
    )
    return dataclasses.replace(bank, conditions=conditions)


def apply_bank_overrides(registry, config: dict) -> None:
    """Apply ``config["BANK_OVERRIDES"]`` (a path, or None for nothing) to the registry's bank, in place."""
    path = config.get("BANK_OVERRIDES")
    if not path:
        return
    overrides = load_overrides(path)
    where = f"bank overrides {Path(path).expanduser()}"
    name = overrides.bank
    if name is None:
        name = registry.app(config.get("CLINICAL_APP")).bank
    if name not in registry.banks:
        raise BankOverridesError(f"{where}: no bank named {name!r} (banks: {', '.join(sorted(registry.banks))})")
    bank = with_thresholds(registry.banks[name], overrides.thresholds, where)
    if overrides.temperature is not None:
        bank = dataclasses.replace(bank, temperature=overrides.temperature)
    registry.banks[name] = bank


def format_overrides(
    bank_name: str, thresholds: dict[str, float], comments: list[str] = (), temperature: float | None = None
) -> str:
    """The TOML text of an overrides file (comments first, each line prefixed with '# ')."""
    lines = [f"# {line}".rstrip() for line in comments]
    lines += [f"bank = {_toml_string(bank_name)}", "", "[thresholds]"]
    lines += [f"{_toml_key(condition_id)} = {value!r}" for condition_id, value in thresholds.items()]
    if temperature is not None:
        lines += ["", "[calibration]", f"temperature = {float(temperature)!r}"]
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _toml_string(key)
