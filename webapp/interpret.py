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

from .interfaces import CANT_ASSESS, Condition, InterpretationRules, PromptBank, Scores

# Scores are float32 softmax outputs: two numbers closer than this are equal,
# so a hand-typed 0.40 margin lands in the band a person expects.
EPSILON = 1e-9

RISK_HIGH = "high"
RISK_MODERATE = "moderate"
RISK_LOW = "low"
RISK_UNCLEAR = "unclear"


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

    steps.append(
        f"Ranked {n} condition{'s' if n != 1 else ''}: "
        + ", ".join(f"{item.condition.label} {_pct(item.probability)}" for item in ranking[:3])
        + ("" if n <= 3 else ", ...")
        + "."
    )
    high_risk_count = sum(item.high_risk for item in ranking)
    if rules.high_risk_groups:
        steps.append(
            f"High-risk groups ({', '.join(rules.high_risk_groups)}): {high_risk_count} "
            f"condition{'s' if high_risk_count != 1 else ''}, together {_pct(high_risk_probability)}."
        )

    margin, consolidated, consolidated_ids, not_clear = _margin(ranking, high_risk_probability, rules, steps)

    if not_clear:
        confidence = rules.fallback_confidence
        steps.append(f"Confidence: {confidence} (the mix is too close to call).")
    else:
        confidence = _confidence_label(margin, rules)
        steps.append(_confidence_step(margin, confidence, rules))

    entropy = _entropy_bits(probabilities)
    reliable = entropy <= rules.entropy_limit_bits + EPSILON
    steps.append(
        f"Entropy {entropy:.2f} bits {'<=' if reliable else '>'} limit {rules.entropy_limit_bits:.2f} "
        f"(maximum for {n} classes: {math.log2(n) if n > 1 else 0.0:.2f}): "
        f"{'reliable' if reliable else 'unreliable, the scores are spread out'}."
    )

    risk, risk_reason = _risk(head, high_risk_probability, not_clear, rules)
    if not reliable:
        risk_reason += " The scores are spread across many conditions, so the ranking itself is unreliable."
    steps.append(f"Risk: {risk}. {risk_reason}")

    alerts = [
        item.condition.id for item in ranking if item.probability + EPSILON >= item.condition.alert_threshold
    ]
    if alerts:
        steps.append("At or above their alert threshold: " + ", ".join(alerts) + ".")

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
        steps.append(f"Only one condition in the bank: margin = {head.probability:.3f}.")
        return head.probability, False, [], False

    first_other = next((item for item in ranking if not item.high_risk), None)

    if head.high_risk:
        if first_other is None:
            steps.append(
                f"Every condition is high risk: consolidated {_pct(high_risk_probability)} against nothing, "
                f"margin = {high_risk_probability:.3f}."
            )
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
            steps.append(
                f"Top condition {head.condition.label} is high risk but tied with {first_other.condition.label}: "
                f"margin = {margin:.3f}."
            )
            consolidated, consolidated_ids, summed = False, [], head.probability
        else:
            summed = sum(item.probability for item in run)
            margin = summed - first_other.probability
            consolidated = len(run) > 1
            consolidated_ids = [item.condition.id for item in run] if consolidated else []
            if consolidated:
                steps.append(
                    f"Top {len(run)} are high risk ({', '.join(item.condition.label for item in run)}): "
                    f"consolidated {_pct(summed)} minus first other ({first_other.condition.label}) "
                    f"{_pct(first_other.probability)}: margin = {margin:.3f}."
                )
            else:
                steps.append(
                    f"Top condition {head.condition.label} {_pct(summed)} minus first other "
                    f"({first_other.condition.label}) {_pct(first_other.probability)}: margin = {margin:.3f}."
                )
        gap = summed - first_other.probability
        not_clear = gap <= rules.unclear_margin + EPSILON
        steps.append(
            f"Not-clear check: high-risk lead {gap:.3f} {'<=' if not_clear else '>'} unclear margin "
            f"{rules.unclear_margin:.3f}: {'not clear' if not_clear else 'clear'}."
        )
        return margin, consolidated, consolidated_ids, not_clear

    second = ranking[1]
    margin = head.probability - second.probability
    steps.append(
        f"Margin = top {head.condition.label} {_pct(head.probability)} minus second "
        f"{second.condition.label} {_pct(second.probability)} = {margin:.3f}."
    )
    if high_risk_probability <= 0:
        return margin, False, [], False
    # A non-high-risk headline that the high-risk classes together nearly
    # match (or outweigh) must not be reported with confidence.
    gap = head.probability - high_risk_probability
    not_clear = gap <= rules.unclear_margin + EPSILON
    steps.append(
        f"Not-clear check: top {_pct(head.probability)} minus all high-risk {_pct(high_risk_probability)} = "
        f"{gap:.3f} {'<=' if not_clear else '>'} unclear margin {rules.unclear_margin:.3f}: "
        f"{'not clear' if not_clear else 'clear'}."
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
            return f"Confidence: margin {margin:.3f} > {level.min_margin:.2f}: {confidence}."
    lowest = min((level.min_margin for level in rules.confidence_levels), default=0.0)
    return f"Confidence: margin {margin:.3f} <= {lowest:.2f}: {confidence}."


def _entropy_bits(probabilities: list[float]) -> float:
    entropy = -sum(p * math.log2(p) for p in probabilities if p > 0)
    return entropy if entropy > 0 else 0.0  # not -0.0 for a one-hot distribution


def _risk(
    head: RankedCondition, high_risk_probability: float, not_clear: bool, rules: InterpretationRules
) -> tuple[str, str]:
    condition = head.condition
    if head.high_risk:
        groups = ", ".join(g for g in condition.groups if g in rules.high_risk_groups)
        reason = f"The closest match, {condition.label}, belongs to a high-risk group ({groups})."
        if not_clear:
            reason += " Other, lower-risk conditions score almost as high, but the high-risk result stands."
        return RISK_HIGH, reason
    if not_clear:
        return RISK_UNCLEAR, (
            f"The closest match, {condition.label}, is not high risk, but high-risk conditions together "
            f"score about as high ({_pct(high_risk_probability)} against {_pct(head.probability)}), "
            "so they cannot be ruled out."
        )
    watched = [g for g in condition.groups if g in rules.watch_groups]
    if watched:
        return RISK_MODERATE, (
            f"The closest match, {condition.label}, belongs to a group to keep an eye on ({', '.join(watched)})."
        )
    return RISK_LOW, f"The closest match, {condition.label}, is not in a high-risk or watch group."


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


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
        conditions = [f"risk {reading.risk}"]
        if rule.min_high_risk_probability > 0:
            conditions.append(f"high-risk total {_pct(reading.high_risk_probability)} >= {_pct(rule.min_high_risk_probability)}")
        if rule.requires_reliable:
            conditions.append("ranking reliable")
        return rule.id, rule.label, rule.meaning, f"Tier: {rule.label} ({', '.join(conditions)})."
    # A bank without tiers (a plugin's older bank) still gets a safe headline.
    return "refer", "Refer", "Have a clinician look at it.", "Tier: Refer (the bank defines no tiers)."


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
                      steps=[f"Scope gate: score {scope.score:.3f} below {bank.scope.min_score:.2f}: out of scope."])
    steps: list[str] = []
    reasons: list[str] = []
    low_quality = False
    if quality is not None and not quality.passed:
        reasons = [check.hint for check in quality.failed]
        failed = ", ".join(check.name for check in quality.failed)
        if not analyse_anyway:
            return Triage(False, *cant, show_advice=False, reasons=reasons,
                          steps=[f"Quality gate failed ({failed}): can't assess."])
        low_quality = True
        steps.append(f"Quality gate failed ({failed}); analysed anyway at the user's request: low quality.")
    if reading is None:
        return Triage(False, *cant, show_advice=False, low_quality=low_quality,
                      reasons=reasons or ["The picture could not be analysed."], steps=steps)
    tier, label, meaning, step = tier_for(reading, bank)
    steps.append(step)
    show_advice = (
        not low_quality
        and reading.reliable
        and not reading.not_clear
        and reading.risk != RISK_UNCLEAR
        and reading.confidence in rules.advice_confidence
    )
    steps.append(
        "Condition advice shown." if show_advice else
        f"No condition advice (confidence '{reading.confidence}', "
        f"{'reliable' if reading.reliable else 'unreliable'} ranking"
        f"{', low quality' if low_quality else ''}; advice needs {', '.join(rules.advice_confidence) or 'nothing'})."
    )
    return Triage(not low_quality, tier, label, meaning, show_advice, low_quality, reasons, steps)
