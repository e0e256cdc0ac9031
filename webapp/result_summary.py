"""One photo's result in a few plain fields: what the summary, comparison, reports and exports show.

Every place outside the result card reads a result through ``summarise``, so
the tier, the quality note and the skin-tone note are worded the same in the
timeline summary, the printable report, the CSV/JSON and the FHIR export.

Tiers: when the reading carries issue 12's triage (``reading.triage``, the
bank's "Refer urgently" / "Refer" / "Monitor" / "Can't assess" tiers), those
are used, ranked in the bank's order. Without it the interpreter's risk is
the tier (high, unclear, moderate, low concern), so this module is the one
place to change when the triage lands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask_babel import gettext as _

from .i18n import N_, number, translate
from .quality import check_names

# Worst first. "Unclear" ranks right after high: high-risk conditions could not be ruled out.
RISK_TIERS = {
    "high": (N_("High concern"), "▲"),
    "unclear": (N_("Unclear"), "?"),
    "moderate": (N_("Moderate concern"), "◆"),
    "low": (N_("Low concern"), "●"),
}
CANT_ASSESS = "cant_assess"
NOT_ANALYSED = "not_analysed"


@dataclass(frozen=True)
class Tier:
    id: str
    label: str
    rank: int  # 0 is the most urgent; sorting by it puts the worst first
    icon: str = "●"
    meaning: str = ""


@dataclass
class ResultSummary:
    tier: Tier
    analysed: bool
    headline_id: str = ""
    headline_label: str = ""
    headline_snomed_ct: str = ""
    headline_icd10: str = ""
    headline_probability: float = 0.0
    high_risk_probability: float = 0.0
    confidence: str = ""
    reliable: bool = False
    top: list = field(default_factory=list)  # [(Condition, probability, at or above its alert threshold)]
    quality_note: str = ""
    skin_tone_note: str = ""
    notes: list[str] = field(default_factory=list)


def tier_of(reading, bank, analysed: bool) -> Tier:
    triage = getattr(reading, "triage", None) if reading is not None else None
    if triage is not None:  # issue 12: the bank's own tiers, in its order
        order = [rule.id for rule in bank.triage.tiers]
        rank = order.index(triage.tier) if triage.tier in order else len(order)
        icon = "?" if triage.tier == CANT_ASSESS else ("▲" if rank == 0 else "◆" if rank == 1 else "●")
        return Tier(triage.tier, triage.tier_label, rank, icon, triage.tier_meaning)
    if not analysed or reading is None:
        return Tier(CANT_ASSESS, bank.triage.cant_assess_label, len(RISK_TIERS), "?", _("The photo could not be analysed."))
    label, icon = RISK_TIERS.get(reading.risk, RISK_TIERS["unclear"])
    return Tier(reading.risk, _(label), list(RISK_TIERS).index(reading.risk) if reading.risk in RISK_TIERS else 1, icon,
                reading.risk_reason)


def not_analysed_summary(state: str) -> ResultSummary:
    words = {"new": N_("Not analysed yet"), "queued": N_("Queued"), "running": N_("Being analysed"), "error": N_("Analysis failed")}
    return ResultSummary(Tier(NOT_ANALYSED, _(words.get(state, words["new"])), 99, "●"), analysed=False)


def summarise(result, reading, bank, thresholds: dict[str, float] | None = None, top_n: int = 3) -> ResultSummary:
    """``reading`` is ``webapp.pipeline.read(result, bank, rules)`` (None when not analysed)."""
    analysed = bool(result is not None and result.analysed and reading is not None)
    summary = ResultSummary(tier_of(reading, bank, analysed), analysed,
                            notes=[translate(note) for note in result.notes] if result else [])
    summary.quality_note = _quality_note(result, reading)
    summary.skin_tone_note = _skin_tone_note(result, bank)
    if not analysed:
        return summary
    thresholds = thresholds or {c.id: c.alert_threshold for c in bank.conditions}
    head = reading.headline
    summary.headline_id, summary.headline_label = head.id, head.label
    summary.headline_snomed_ct, summary.headline_icd10 = head.snomed_ct, head.icd10
    summary.headline_probability = float(reading.headline_probability)
    summary.high_risk_probability = float(reading.high_risk_probability)
    summary.confidence = reading.confidence
    summary.reliable = bool(reading.reliable)
    summary.top = [
        (item.condition, float(item.probability), item.probability >= thresholds.get(item.condition.id, 1.0))
        for item in reading.ranking[:top_n]
    ]
    return summary


def _quality_note(result, reading) -> str:
    quality = getattr(result, "quality", None)
    if quality is not None:  # issue 12's quality gate
        if quality.passed:
            return _("Photo quality: passed the quality checks.")
        failed = check_names(quality.failed)
        if getattr(result, "low_quality", False):
            return _("Photo quality: failed (%(checks)s). Analysed anyway at the user's request: low quality.", checks=failed)
        return _("Photo quality: failed (%(checks)s).", checks=failed)
    if reading is None:
        return _("Photo quality: not assessed.")
    parts = [_("confidence %(confidence)s", confidence=reading.confidence)]
    parts.append(_("ranking reliable") if reading.reliable else
                 _("ranking unreliable (entropy %(entropy)s bits over the limit %(limit)s)",
                   entropy=number(reading.entropy_bits, 2), limit=number(reading.entropy_limit_bits, 2)))
    if getattr(result, "nothing_located", False):
        parts.append(_("nothing located, the whole photo was analysed"))
    return _("Reliability: %(parts)s.", parts=", ".join(parts))


def _skin_tone_note(result, bank) -> str:
    tone = getattr(result, "skin_tone", None)
    if tone is None:
        return ""
    try:
        from .gate_fields import skin_tone_caution  # issue 12
    except ImportError:  # pragma: no cover - before issue 12
        return ""
    caution = skin_tone_caution(result, bank)
    label = translate(getattr(tone, "label", "") or getattr(tone, "band", ""))
    return (_("Skin tone estimate: %(tone)s.", tone=label) + " " + caution).strip()
