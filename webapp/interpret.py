"""Turn one image's scores into a headline, a risk and a confidence, by bank rules.

The interpreter is generic: it knows no condition, group or label of its own.
Everything it decides comes from the bank (group tags of each condition) and
its ``InterpretationRules`` (which groups are high risk, which to watch, the
entropy limit, the "not clear" margin and the confidence bands). It is a pure
function, so the debug panel can re-run it with changed rules::

    interpret(scores, bank, dataclasses.replace(bank.rules, unclear_margin=0.1))

The rules mirror the system PrivaScan replaces (Dermatolog AI Scan): margin is
top-1 minus top-2; when the leading classes are all high risk their
probabilities are consolidated and compared with the first other class; a
high-risk/other mix closer than ``unclear_margin`` is "not clear"; confidence
labels need the margin to be strictly greater than a band's lower bound;
Shannon entropy above the limit flags the ranking as unreliable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from flask_babel import gettext as _, ngettext

from .i18n import N_, Message, number, percent
from .interfaces import CANT_ASSESS, Condition, InterpretationRules, PromptBank, Scores
from .quality import check_names

# Group tags are ids in the bank; these are their names in a sentence.
GROUP_NAMES = {
    "malignant": N_("malignant"), "premalignant": N_("premalignant"), "benign": N_("benign"),
    "inflammatory": N_("inflammatory"), "infectious": N_("infectious"), "normal": N_("normal"),
    "urgent": N_("urgent"), "abnormal": N_("abnormal"),
}


def group_names(groups) -> str:
    """Group tags as words of the request's language, comma-separated."""
    return ", ".join(_(GROUP_NAMES[group]) if group in GROUP_NAMES else group for group in groups)


def _fixed(value: float, digits: int) -> str:
    return number(value, digits)

# Scores are float32 softmax outputs: two numbers closer than this are equal,
# so a hand-typed 0.40 margin lands in the band a person expects.
EPSILON = 1e-9

RISK_HIGH = "high"
RISK_MODERATE = "moderate"
RISK_LOW = "low"
RISK_UNCLEAR = "unclear"
RISK_NAMES = {RISK_HIGH: N_("high"), RISK_MODERATE: N_("moderate"), RISK_LOW: N_("low"), RISK_UNCLEAR: N_("unclear")}


@dataclass(frozen=True)
class RankedCondition:
    condition: Condition
    probability: float
    high_risk: bool = False


@dataclass
class Interpretation:
    """What one set of scores means under one bank's rules, with the reasoning."""

    ranking: list[RankedCondition]  # high to low; ties keep bank order
    headline: Condition  # the top-ranked condition
    headline_probability: float
    risk: str  # "high" | "moderate" | "low" | "unclear"
    risk_reason: str  # one or two plain sentences
    confidence: str  # a label from the rules' confidence bands, or the fallback
    margin: float
    entropy_bits: float
    entropy_limit_bits: float
    reliable: bool  # entropy within the limit
    consolidated: bool  # margin came from summing leading high-risk classes
    consolidated_ids: list[str]  # the classes that were summed (empty if not consolidated)
    not_clear: bool  # a high-risk/other mix too close to call
    high_risk_probability: float  # sum over every high-risk condition
    alerts: list[str]  # ids whose probability reached their own alert_threshold
    steps: list[str]  # the reasoning in words, for the debug panel
    rules: InterpretationRules = field(default_factory=InterpretationRules)
    triage: "Triage | None" = None  # set by webapp.pipeline.read: the headline tier with the gates' verdicts

    @property
    def top(self) -> RankedCondition:
        return self.ranking[0]


def interpret(scores: Scores, bank: PromptBank, rules: InterpretationRules | None = None) -> Interpretation:
    """Rank, consolidate and label ``scores`` under ``rules`` (the bank's own by default)."""
    rules = rules if rules is not None else bank.rules
    ranking = _rank(scores, bank, rules)
    steps: list[str] = []
    n = len(ranking)
    probabilities = [item.probability for item in ranking]
    head = ranking[0]
    high_risk_probability = sum(item.probability for item in ranking if item.high_risk)

    top = ", ".join(f"{item.condition.label} {_pct(item.probability)}" for item in ranking[:3]) + ("" if n <= 3 else ", ...")
    steps.append(ngettext("Ranked %(num)d condition: %(top)s.", "Ranked %(num)d conditions: %(top)s.", n, top=top))
    high_risk_count = sum(item.high_risk for item in ranking)
    if rules.high_risk_groups:
        steps.append(ngettext(
            "High-risk groups (%(groups)s): %(num)d condition, together %(total)s.",
            "High-risk groups (%(groups)s): %(num)d conditions, together %(total)s.",
            high_risk_count, groups=group_names(rules.high_risk_groups), total=_pct(high_risk_probability),
        ))

    margin, consolidated, consolidated_ids, not_clear = _margin(ranking, high_risk_probability, rules, steps)

    if not_clear:
        confidence = rules.fallback_confidence
        steps.append(_("Confidence: %(confidence)s (the mix is too close to call).", confidence=confidence))
    else:
        confidence = _confidence_label(margin, rules)
        steps.append(_confidence_step(margin, confidence, rules))

    entropy = _entropy_bits(probabilities)
    reliable = entropy <= rules.entropy_limit_bits + EPSILON
    entropy_words = dict(entropy=_fixed(entropy, 2), limit=_fixed(rules.entropy_limit_bits, 2), num=n,
                         maximum=_fixed(math.log2(n) if n > 1 else 0.0, 2))
    steps.append(
        _("Entropy %(entropy)s bits <= limit %(limit)s (maximum for %(num)d classes: %(maximum)s): reliable.", **entropy_words)
        if reliable else
        _("Entropy %(entropy)s bits > limit %(limit)s (maximum for %(num)d classes: %(maximum)s): "
          "unreliable, the scores are spread out.", **entropy_words)
    )

    risk, risk_reason = _risk(head, high_risk_probability, not_clear, rules)
    if not reliable:
        risk_reason += " " + _("The scores are spread across many conditions, so the ranking itself is unreliable.")
    steps.append(_("Risk: %(risk)s. %(reason)s", risk=_(RISK_NAMES[risk]), reason=risk_reason))

    alerts = [
        item.condition.id for item in ranking if item.probability + EPSILON >= item.condition.alert_threshold
    ]
    if alerts:
        steps.append(_("At or above their alert threshold: %(conditions)s.",
                       conditions=", ".join(item.condition.label for item in ranking if item.condition.id in alerts)))

    return Interpretation(
        ranking=ranking,
        headline=head.condition,
        headline_probability=head.probability,
        risk=risk,
        risk_reason=risk_reason,
        confidence=confidence,
        margin=margin,
        entropy_bits=entropy,
        entropy_limit_bits=rules.entropy_limit_bits,
        reliable=reliable,
        consolidated=consolidated,
        consolidated_ids=consolidated_ids,
        not_clear=not_clear,
        high_risk_probability=high_risk_probability,
        alerts=alerts,
        steps=steps,
        rules=rules,
    )


def _rank(scores: Scores, bank: PromptBank, rules: InterpretationRules) -> list[RankedCondition]:
    ids = list(scores.condition_ids)
    probabilities = np.asarray(scores.probabilities, dtype=np.float64).reshape(-1)
    if not ids:
        raise ValueError("scores hold no conditions")
    if len(ids) != probabilities.size:
        raise ValueError(f"scores have {len(ids)} condition ids but {probabilities.size} probabilities")
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
        raise ValueError("probabilities must be finite and non-negative")
    total = float(probabilities.sum())
    if total <= 0:
        raise ValueError("probabilities sum to zero")
    # Softmax in float32 sums to 1 only approximately; renormalise so margins
    # and entropy are computed on a true distribution.
    probabilities = probabilities / total
    order = {condition.id: position for position, condition in enumerate(bank.conditions)}
    unknown = [condition_id for condition_id in ids if condition_id not in order]
    if unknown:
        raise ValueError(f"scores name conditions not in bank '{bank.name}': {', '.join(unknown)}")
    high_risk_groups = set(rules.high_risk_groups)
    rows = [
        RankedCondition(
            condition=bank.conditions[order[condition_id]],
            probability=float(probability),
            high_risk=bool(high_risk_groups.intersection(bank.conditions[order[condition_id]].groups)),
        )
        for condition_id, probability in zip(ids, probabilities)
    ]
    # Stable: equal probabilities keep the bank's order, so a tie always
    # resolves the same way for the same bank.
    return sorted(rows, key=lambda row: (-row.probability, order[row.condition.id]))


def _margin(
    ranking: list[RankedCondition],
    high_risk_probability: float,
    rules: InterpretationRules,
    steps: list[str],
) -> tuple[float, bool, list[str], bool]:
    """Return (margin, consolidated, consolidated ids, not clear) and explain them in ``steps``."""
    head = ranking[0]
    if len(ranking) == 1:
        steps.append(_("Only one condition in the bank: margin = %(margin)s.", margin=_fixed(head.probability, 3)))
        return head.probability, False, [], False

    first_other = next((item for item in ranking if not item.high_risk), None)

    if head.high_risk:
        if first_other is None:
            steps.append(_("Every condition is high risk: consolidated %(total)s against nothing, margin = %(margin)s.",
                           total=_pct(high_risk_probability), margin=_fixed(high_risk_probability, 3)))
            return high_risk_probability, len(ranking) > 1, [item.condition.id for item in ranking], False
        # The leading run of high-risk classes, stopping at the first class
        # that is not high risk; a class merely tied with that one is not
        # "above" it (its place in a tie is only bank order), so a flat
        # distribution gives margin 0 rather than a spurious consolidation.
        run: list[RankedCondition] = []
        for item in ranking:
            if not item.high_risk or item.probability <= first_other.probability + EPSILON:
                break
            run.append(item)
        if not run:
            margin = head.probability - first_other.probability
            steps.append(_("Top condition %(top)s is high risk but tied with %(other)s: margin = %(margin)s.",
                           top=head.condition.label, other=first_other.condition.label, margin=_fixed(margin, 3)))
            consolidated, consolidated_ids, summed = False, [], head.probability
        else:
            summed = sum(item.probability for item in run)
            margin = summed - first_other.probability
            consolidated = len(run) > 1
            consolidated_ids = [item.condition.id for item in run] if consolidated else []
            if consolidated:
                steps.append(_(
                    "Top %(num)d are high risk (%(conditions)s): consolidated %(total)s minus first other (%(other)s) "
                    "%(other_score)s: margin = %(margin)s.",
                    num=len(run), conditions=", ".join(item.condition.label for item in run), total=_pct(summed),
                    other=first_other.condition.label, other_score=_pct(first_other.probability), margin=_fixed(margin, 3),
                ))
            else:
                steps.append(_(
                    "Top condition %(top)s %(score)s minus first other (%(other)s) %(other_score)s: margin = %(margin)s.",
                    top=head.condition.label, score=_pct(summed), other=first_other.condition.label,
                    other_score=_pct(first_other.probability), margin=_fixed(margin, 3),
                ))
        gap = summed - first_other.probability
        not_clear = gap <= rules.unclear_margin + EPSILON
        words = dict(gap=_fixed(gap, 3), limit=_fixed(rules.unclear_margin, 3))
        steps.append(
            _("Not-clear check: high-risk lead %(gap)s <= unclear margin %(limit)s: not clear.", **words) if not_clear else
            _("Not-clear check: high-risk lead %(gap)s > unclear margin %(limit)s: clear.", **words)
        )
        return margin, consolidated, consolidated_ids, not_clear

    second = ranking[1]
    margin = head.probability - second.probability
    steps.append(_(
        "Margin = top %(top)s %(score)s minus second %(second)s %(second_score)s = %(margin)s.",
        top=head.condition.label, score=_pct(head.probability), second=second.condition.label,
        second_score=_pct(second.probability), margin=_fixed(margin, 3),
    ))
    if high_risk_probability <= 0:
        return margin, False, [], False
    # A non-high-risk headline that the high-risk classes together nearly
    # match (or outweigh) must not be reported with confidence.
    gap = head.probability - high_risk_probability
    not_clear = gap <= rules.unclear_margin + EPSILON
    words = dict(top=_pct(head.probability), total=_pct(high_risk_probability), gap=_fixed(gap, 3),
                 limit=_fixed(rules.unclear_margin, 3))
    steps.append(
        _("Not-clear check: top %(top)s minus all high-risk %(total)s = %(gap)s <= unclear margin %(limit)s: not clear.",
          **words) if not_clear else
        _("Not-clear check: top %(top)s minus all high-risk %(total)s = %(gap)s > unclear margin %(limit)s: clear.",
          **words)
    )
    return margin, False, [], not_clear


def _confidence_label(margin: float, rules: InterpretationRules) -> str:
    for level in sorted(rules.confidence_levels, key=lambda level: -level.min_margin):
        if margin > level.min_margin + EPSILON:
            return level.label
    return rules.fallback_confidence


def _confidence_step(margin: float, confidence: str, rules: InterpretationRules) -> str:
    for level in sorted(rules.confidence_levels, key=lambda level: -level.min_margin):
        if margin > level.min_margin + EPSILON:
            return _("Confidence: margin %(margin)s > %(band)s: %(confidence)s.",
                     margin=_fixed(margin, 3), band=_fixed(level.min_margin, 2), confidence=confidence)
    lowest = min((level.min_margin for level in rules.confidence_levels), default=0.0)
    return _("Confidence: margin %(margin)s <= %(band)s: %(confidence)s.",
             margin=_fixed(margin, 3), band=_fixed(lowest, 2), confidence=confidence)


def _entropy_bits(probabilities: list[float]) -> float:
    entropy = -sum(p * math.log2(p) for p in probabilities if p > 0)
    return entropy if entropy > 0 else 0.0  # not -0.0 for a one-hot distribution


def _risk(
    head: RankedCondition, high_risk_probability: float, not_clear: bool, rules: InterpretationRules
) -> tuple[str, str]:
    condition = head.condition
    if head.high_risk:
        groups = group_names(g for g in condition.groups if g in rules.high_risk_groups)
        reason = _("The closest match, %(condition)s, belongs to a high-risk group (%(groups)s).",
                   condition=condition.label, groups=groups)
        if not_clear:
            reason += " " + _("Other, lower-risk conditions score almost as high, but the high-risk result stands.")
        return RISK_HIGH, reason
    if not_clear:
        return RISK_UNCLEAR, _(
            "The closest match, %(condition)s, is not high risk, but high-risk conditions together score about as "
            "high (%(total)s against %(score)s), so they cannot be ruled out.",
            condition=condition.label, total=_pct(high_risk_probability), score=_pct(head.probability),
        )
    watched = [g for g in condition.groups if g in rules.watch_groups]
    if watched:
        return RISK_MODERATE, _("The closest match, %(condition)s, belongs to a group to keep an eye on (%(groups)s).",
                                condition=condition.label, groups=group_names(watched))
    return RISK_LOW, _("The closest match, %(condition)s, is not in a high-risk or watch group.", condition=condition.label)


def _pct(value: float) -> str:
    return percent(value, 1)


# ------------------------------------------------------------------ triage
@dataclass
class Triage:
    """The headline tier of one result, and whether condition advice may be shown.

    Plain fields only, so results, the API, reports and exports can carry it
    as it is. ``assessable`` is False whenever a gate failed, even when the
    user chose "Analyse anyway" (then ``low_quality`` is True and ``tier`` is
    the tier the scores would give, marked low quality wherever it is shown).
    """

    assessable: bool
    tier: str  # a bank tier id, or CANT_ASSESS
    tier_label: str
    tier_meaning: str
    show_advice: bool  # the headline condition's summary may be shown
    low_quality: bool = False  # analysed although the quality gate failed
    reasons: list[str] = field(default_factory=list)  # why it cannot be assessed / retake hints
    steps: list[str] = field(default_factory=list)


def tier_for(reading: Interpretation, bank: PromptBank) -> tuple[str, str, str, str]:
    """(tier id, label, meaning, step) of the first of the bank's tiers that matches ``reading``."""
    for rule in bank.triage.tiers:
        if reading.risk not in rule.risks:
            continue
        if reading.high_risk_probability + EPSILON < rule.min_high_risk_probability:
            continue
        if rule.requires_reliable and not reading.reliable:
            continue
        conditions = [_("risk %(risk)s", risk=_(RISK_NAMES[reading.risk]))]
        if rule.min_high_risk_probability > 0:
            conditions.append(_("high-risk total %(total)s >= %(floor)s", total=_pct(reading.high_risk_probability),
                                floor=_pct(rule.min_high_risk_probability)))
        if rule.requires_reliable:
            conditions.append(_("ranking reliable"))
        return rule.id, rule.label, rule.meaning, _("Tier: %(tier)s (%(conditions)s).", tier=rule.label,
                                                    conditions=", ".join(conditions))
    # A bank without tiers (a plugin's older bank) still gets a safe headline.
    return "refer", _("Refer"), _("Have a clinician look at it."), _("Tier: Refer (the bank defines no tiers).")


def triage(
    reading: Interpretation | None,
    bank: PromptBank,
    quality=None,
    scope=None,
    analyse_anyway: bool = False,
) -> Triage:
    """Combine the gates' verdicts and the reading into the headline tier.

    ``quality`` is a ``webapp.quality.QualityReport`` (or None: not run),
    ``scope`` a ``webapp.scope.ScopeVerdict`` (or None). Out of scope is never
    overridden; a failed quality gate is, with ``analyse_anyway``, but the
    result then stays not assessable, low quality and without advice.
    """
    rules = bank.triage
    cant = (CANT_ASSESS, rules.cant_assess_label, rules.cant_assess_meaning)
    if scope is not None and scope.in_scope is False:
        return Triage(False, *cant, show_advice=False, reasons=[scope.message],
                      steps=[_("Scope gate: score %(score)s below %(limit)s: out of scope.",
                               score=_fixed(scope.score, 3), limit=_fixed(bank.scope.min_score, 2))])
    steps: list[str] = []
    reasons: list[str] = []
    low_quality = False
    if quality is not None and not quality.passed:
        reasons = [check.hint for check in quality.failed]
        failed = check_names(quality.failed)
        if not analyse_anyway:
            return Triage(False, *cant, show_advice=False, reasons=reasons,
                          steps=[_("Quality gate failed (%(checks)s): can't assess.", checks=failed)])
        low_quality = True
        steps.append(_("Quality gate failed (%(checks)s); analysed anyway at the user's request: low quality.", checks=failed))
    if reading is None:
        return Triage(False, *cant, show_advice=False, low_quality=low_quality,
                      reasons=reasons or [Message(N_("The picture could not be analysed."))], steps=steps)
    tier, label, meaning, step = tier_for(reading, bank)
    steps.append(step)
    show_advice = (
        not low_quality
        and reading.reliable
        and not reading.not_clear
        and reading.risk != RISK_UNCLEAR
        and reading.confidence in rules.advice_confidence
    )
    needs = ", ".join(rules.advice_confidence) or _("nothing")
    if show_advice:
        steps.append(_("Condition advice shown."))
    elif low_quality:
        steps.append(_("No condition advice (confidence '%(confidence)s', low quality; advice needs %(needs)s).",
                       confidence=reading.confidence, needs=needs))
    elif reading.reliable:
        steps.append(_("No condition advice (confidence '%(confidence)s', reliable ranking; advice needs %(needs)s).",
                       confidence=reading.confidence, needs=needs))
    else:
        steps.append(_("No condition advice (confidence '%(confidence)s', unreliable ranking; advice needs %(needs)s).",
                       confidence=reading.confidence, needs=needs))
    return Triage(not low_quality, tier, label, meaning, show_advice, low_quality, reasons, steps)
