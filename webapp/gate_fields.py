"""The gates' verdicts as plain data: one shape for the JSON API, the CLI and exports.

Every place that shows a result (page, API, ``privascan analyze``, reports)
reads these fields, so a low-quality or out-of-scope result is marked the same
way everywhere.
"""

from __future__ import annotations

from .interfaces import CANT_ASSESS

RELATIVE_SCORES = (
    "The percentages are relative scores among this bank's conditions, not probabilities of disease "
    "(the scores are not calibrated for this clinic)."
)
CALIBRATED_SCORES = "The percentages are calibrated on this clinic's labelled photos (privascan eval --fit-calibration)."


def skin_tone_caution(result, bank) -> str:
    tone = result.skin_tone
    if tone is None or tone.band not in bank.triage.skin_tone_caution_bands:
        return ""
    return bank.triage.skin_tone_caution


def gate_fields(result, bank, reading=None) -> dict:
    """assessable, tier, quality, scope, skin_tone, calibrated (and their words) of one result."""
    verdict = reading.triage if reading is not None and reading.triage is not None else result.triage
    tone = result.skin_tone
    return {
        "assessable": bool(verdict and verdict.assessable),
        "tier": verdict.tier if verdict else CANT_ASSESS,
        "tier_label": verdict.tier_label if verdict else bank.triage.cant_assess_label,
        "tier_meaning": verdict.tier_meaning if verdict else bank.triage.cant_assess_meaning,
        "low_quality": result.low_quality,
        "reasons": list(verdict.reasons) if verdict else [],
        "advice_shown": bool(verdict and verdict.show_advice),
        "quality": result.quality.as_dict() if result.quality is not None else {"passed": False, "checks": []},
        "scope": result.scope.as_dict() if result.scope is not None else {"in_scope": None, "score": None, "message": ""},
        "skin_tone": (
            {**tone.as_dict(), "caution": skin_tone_caution(result, bank)} if tone is not None else None
        ),
        "calibrated": result.calibrated,
        "scores_note": CALIBRATED_SCORES if result.calibrated else RELATIVE_SCORES,
    }
