"""The generic interpreter, on hand-built score vectors with hand-computed answers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from webapp.interfaces import (
    Condition,
    ConfidenceLevel,
    InterpretationRules,
    PromptBank,
    Scores,
    TemplateSet,
)
from webapp.interpret import Interpretation, RankedCondition, interpret
from webapp.prompt_bank import load_prompt_bank

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
TEMPLATES = (TemplateSet("photo", "Photo", ("A photo of {}.",)),)


# The skin bank's rules: the core has no groups of its own, so tests say them too.
SKIN_RULES = InterpretationRules(high_risk_groups=("malignant",), watch_groups=("premalignant",))


def make_bank(*spec: tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], float], rules=None) -> PromptBank:
    """A bank from (id, groups[, alert_threshold]) tuples, in that order."""
    conditions = tuple(
        Condition(
            id=item[0],
            label=item[0].replace("_", " ").capitalize(),
            groups=item[1],
            descriptions=(item[0].replace("_", " "),),
            alert_threshold=item[2] if len(item) > 2 else 0.5,
        )
        for item in spec
    )
    return PromptBank(
        name="test", title="Test", conditions=conditions, template_sets=TEMPLATES, rules=rules or SKIN_RULES
    )


def make_scores(probabilities: dict[str, float], dtype=np.float64) -> Scores:
    ids = list(probabilities)
    p = np.array([probabilities[i] for i in ids], dtype=dtype)
    logits = np.log(np.clip(p, 1e-12, None))
    return Scores(condition_ids=ids, logits=logits, probabilities=p, similarities=logits / 100)


# A small skin-like bank: two high-risk, one to watch, three benign.
SKIN = make_bank(
    ("melanoma", ("malignant",), 0.25),
    ("bcc", ("malignant",), 0.30),
    ("ak", ("premalignant",), 0.40),
    ("nevus", ("benign",), 0.70),
    ("sk", ("benign",), 0.70),
    ("df", ("benign",), 0.70),
)


def skin(**probabilities: float) -> Scores:
    full = {c.id: 0.0 for c in SKIN.conditions}
    full.update(probabilities)
    assert math.isclose(sum(full.values()), 1.0), "test vector must sum to 1"
    return make_scores(full)


def test_plain_top1_confident_low_risk():
    reading = interpret(skin(nevus=0.75, sk=0.15, melanoma=0.04, bcc=0.03, ak=0.03), SKIN)
    assert isinstance(reading, Interpretation)
    assert [r.condition.id for r in reading.ranking] == ["nevus", "sk", "melanoma", "bcc", "ak", "df"]
    assert all(isinstance(r, RankedCondition) for r in reading.ranking)
    assert reading.headline.id == "nevus"
    assert reading.headline_probability == pytest.approx(0.75)
    assert reading.margin == pytest.approx(0.60)
    assert reading.confidence == "confident"
    assert reading.risk == "low"
    assert not reading.consolidated
    assert not reading.not_clear
    assert reading.high_risk_probability == pytest.approx(0.07)
    assert "Nevus" in reading.risk_reason
    # 0.75 log2 0.75 + 0.15 log2 0.15 + 0.04 log2 0.04 + 2 * 0.03 log2 0.03, by hand
    expected = -(0.75 * math.log2(0.75) + 0.15 * math.log2(0.15) + 0.04 * math.log2(0.04) + 2 * 0.03 * math.log2(0.03))
    assert reading.entropy_bits == pytest.approx(expected)
    assert reading.reliable


PAIR = make_bank(("a", ("benign",)), ("b", ("benign",)))


@pytest.mark.parametrize(
    "margin, label",
    [
        (0.90, "confident"),
        (0.41, "confident"),
        (0.40, "plausible"),  # strictly greater than 0.40 is needed for "confident"
        (0.30, "plausible"),
        (0.21, "plausible"),
        (0.20, "low confidence"),
        (0.15, "low confidence"),
        (0.11, "low confidence"),
        (0.10, "unclear"),
        (0.05, "unclear"),
        (0.00, "unclear"),
    ],
)
def test_confidence_bands_and_boundaries(margin, label):
    reading = interpret(make_scores({"a": (1 + margin) / 2, "b": (1 - margin) / 2}), PAIR)
    assert reading.margin == pytest.approx(margin)
    assert reading.confidence == label
    assert reading.risk == "low"


def test_boundaries_hold_for_float32_scores():
    # What a real classifier hands over: float32 softmax output.
    reading = interpret(make_scores({"a": 0.7, "b": 0.3}, dtype=np.float32), PAIR)
    assert reading.margin == pytest.approx(0.4, abs=1e-6)
    assert reading.confidence == "plausible"


def test_consolidation_of_leading_high_risk_classes():
    reading = interpret(skin(melanoma=0.30, bcc=0.25, nevus=0.20, sk=0.15, ak=0.10), SKIN)
    assert reading.headline.id == "melanoma"
    assert reading.consolidated
    assert reading.consolidated_ids == ["melanoma", "bcc"]
    # 0.30 + 0.25 - 0.20, not the plain 0.30 - 0.25
    assert reading.margin == pytest.approx(0.35)
    assert reading.confidence == "plausible"
    assert reading.risk == "high"
    assert not reading.not_clear
    assert reading.high_risk_probability == pytest.approx(0.55)
    assert any("consolidated" in step for step in reading.steps)


def test_single_high_risk_leader_is_not_called_consolidated():
    reading = interpret(skin(melanoma=0.50, nevus=0.30, bcc=0.20), SKIN)
    assert not reading.consolidated
    assert reading.consolidated_ids == []
    assert reading.margin == pytest.approx(0.20)
    assert reading.confidence == "low confidence"
    assert reading.high_risk_probability == pytest.approx(0.70)


def test_not_clear_when_high_risk_top_is_matched_by_another_class():
    reading = interpret(skin(melanoma=0.40, nevus=0.37, sk=0.13, bcc=0.05, ak=0.05), SKIN)
    assert reading.margin == pytest.approx(0.03)
    assert reading.not_clear
    assert reading.confidence == "unclear"
    assert reading.risk == "high"  # never downgraded


def test_not_clear_when_benign_top_is_matched_by_high_risk_sum():
    # nevus 0.40 vs melanoma + bcc = 0.37: within 0.05
    reading = interpret(skin(nevus=0.40, melanoma=0.20, bcc=0.17, sk=0.13, ak=0.10), SKIN)
    assert reading.headline.id == "nevus"
    assert reading.margin == pytest.approx(0.20)  # alone this would be "low confidence"
    assert reading.not_clear
    assert reading.confidence == "unclear"
    assert reading.risk == "unclear"
    assert "cannot be ruled out" in reading.risk_reason


def test_not_clear_when_high_risk_sum_outweighs_a_benign_top():
    reading = interpret(skin(nevus=0.30, melanoma=0.28, bcc=0.27, sk=0.10, ak=0.05), SKIN)
    assert reading.headline.id == "nevus"
    assert reading.high_risk_probability == pytest.approx(0.55)
    assert reading.not_clear
    assert reading.risk == "unclear"


@pytest.mark.parametrize(
    "nevus, melanoma, sk, not_clear",
    [
        (0.45, 0.40, 0.15, True),  # gap exactly 0.05 counts as within
        (0.46, 0.40, 0.14, False),
    ],
)
def test_not_clear_boundary(nevus, melanoma, sk, not_clear):
    reading = interpret(skin(nevus=nevus, melanoma=melanoma, sk=sk), SKIN)
    assert reading.not_clear is not_clear


def test_clear_benign_top_with_some_high_risk_probability():
    reading = interpret(skin(nevus=0.60, melanoma=0.30, bcc=0.05, sk=0.05), SKIN)
    assert not reading.not_clear
    assert reading.margin == pytest.approx(0.30)
    assert reading.confidence == "plausible"
    assert reading.risk == "low"


def test_high_risk_headline_is_never_downgraded():
    # Not clear, low margin, and spread out: still "high".
    for scores in (
        skin(melanoma=0.40, nevus=0.38, sk=0.22),
        skin(melanoma=0.22, nevus=0.20, sk=0.20, df=0.19, ak=0.19),
        skin(bcc=0.34, melanoma=0.33, nevus=0.33),
    ):
        reading = interpret(scores, SKIN)
        assert reading.headline.groups == ("malignant",)
        assert reading.risk == "high"


def test_watch_group_headline_is_moderate():
    reading = interpret(skin(ak=0.70, nevus=0.20, sk=0.10), SKIN)
    assert reading.risk == "moderate"
    assert "premalignant" in reading.risk_reason
    assert reading.confidence == "confident"


def test_ties_keep_bank_order_and_give_margin_zero():
    bank = make_bank(("a", ("benign",)), ("b", ("benign",)), ("c", ("benign",)))
    # Scores listed in a different order than the bank: the bank decides.
    scores = make_scores({"c": 0.4, "a": 0.2, "b": 0.4})
    first = interpret(scores, bank)
    assert [r.condition.id for r in first.ranking] == ["b", "c", "a"]
    assert first.headline.id == "b"
    assert first.margin == 0.0
    assert first.confidence == "unclear"
    again = interpret(scores, bank)
    assert [r.condition.id for r in again.ranking] == ["b", "c", "a"]


def test_tie_between_high_risk_and_other_is_not_consolidated():
    bank = make_bank(("melanoma", ("malignant",)), ("bcc", ("malignant",)), ("nevus", ("benign",)))
    # bcc ties with nevus: it is not "above" the first other class.
    reading = interpret(make_scores({"melanoma": 0.4, "bcc": 0.3, "nevus": 0.3}), bank)
    assert reading.headline.id == "melanoma"
    assert not reading.consolidated
    assert reading.margin == pytest.approx(0.1)
    tied = interpret(make_scores({"melanoma": 0.5, "bcc": 0.0, "nevus": 0.5}), bank)
    assert tied.headline.id == "melanoma"  # bank order
    assert tied.margin == 0.0
    assert tied.not_clear
    assert tied.risk == "high"
    assert tied.confidence == "unclear"


def test_one_class_bank():
    bank = make_bank(("only", ("normal",)))
    reading = interpret(make_scores({"only": 1.0}), bank)
    assert reading.margin == 1.0
    assert reading.entropy_bits == 0.0
    assert reading.reliable
    assert reading.confidence == "confident"
    assert reading.risk == "low"
    assert not reading.not_clear


@pytest.mark.parametrize("n", [2, 4, 5, 6, 8, 18])
def test_uniform_scores(n):
    bank = make_bank(*((f"c{i}", ("benign",)) for i in range(n)))
    reading = interpret(make_scores({f"c{i}": 1 / n for i in range(n)}), bank)
    assert reading.margin == pytest.approx(0.0, abs=1e-12)
    assert reading.entropy_bits == pytest.approx(math.log2(n))
    assert reading.reliable is (math.log2(n) <= 2.5)
    assert reading.confidence == "unclear"
    assert reading.headline.id == "c0"


def test_uniform_over_a_bank_led_by_high_risk_classes():
    reading = interpret(skin(**{c.id: 1 / 6 for c in SKIN.conditions}), SKIN)
    # Equal scores are not "above" each other: no consolidation, margin 0.
    assert reading.margin == pytest.approx(0.0, abs=1e-12)
    assert not reading.consolidated
    assert reading.entropy_bits == pytest.approx(math.log2(6))
    assert not reading.reliable
    assert reading.confidence == "unclear"
    assert reading.risk == "high"  # the tie resolves to the first condition of the bank
    assert "unreliable" in reading.risk_reason


def test_hand_computed_entropy():
    bank = make_bank(("a", ("benign",)), ("b", ("benign",)), ("c", ("benign",)))
    reading = interpret(make_scores({"a": 0.5, "b": 0.25, "c": 0.25}), bank)
    assert reading.entropy_bits == pytest.approx(1.5)
    assert reading.margin == pytest.approx(0.25)


def test_every_class_high_risk():
    bank = make_bank(("x", ("urgent",)), ("y", ("urgent",)), rules=InterpretationRules(high_risk_groups=("urgent",)))
    reading = interpret(make_scores({"x": 0.6, "y": 0.4}), bank)
    assert reading.consolidated
    assert reading.margin == pytest.approx(1.0)
    assert reading.risk == "high"
    assert not reading.not_clear


def test_other_modality_groups_come_from_rules():
    rules = InterpretationRules(high_risk_groups=("urgent",), watch_groups=("abnormal",))
    bank = make_bank(
        ("normal", ("normal",)), ("pneumothorax", ("urgent",)), ("edema", ("urgent",)), ("effusion", ("abnormal",)),
        rules=rules,
    )
    urgent = interpret(make_scores({"normal": 0.2, "pneumothorax": 0.35, "edema": 0.3, "effusion": 0.15}), bank)
    assert urgent.risk == "high"
    assert urgent.consolidated_ids == ["pneumothorax", "edema"]
    assert urgent.margin == pytest.approx(0.45)
    watch = interpret(make_scores({"normal": 0.1, "pneumothorax": 0.05, "edema": 0.05, "effusion": 0.8}), bank)
    assert watch.risk == "moderate"
    # The same scores under the skin rules know no high-risk class here.
    default = interpret(make_scores({"normal": 0.2, "pneumothorax": 0.35, "edema": 0.3, "effusion": 0.15}), bank,
                        SKIN_RULES)
    assert default.risk == "low"
    assert not default.consolidated


def test_changed_rules_change_the_result():
    scores = skin(nevus=0.50, melanoma=0.25, bcc=0.15, sk=0.10)
    base = interpret(scores, SKIN)
    assert not base.not_clear  # 0.50 - 0.40 = 0.10 > 0.05
    assert base.confidence == "plausible"
    assert base.risk == "low"

    wider = interpret(scores, SKIN, dataclasses.replace(SKIN.rules, unclear_margin=0.10))
    assert wider.not_clear
    assert wider.confidence == "unclear"
    assert wider.risk == "unclear"

    stricter = interpret(
        scores,
        SKIN,
        dataclasses.replace(SKIN.rules, confidence_levels=(ConfidenceLevel(0.5, "sure"),), fallback_confidence="unsure"),
    )
    assert stricter.confidence == "unsure"

    calm = interpret(scores, SKIN, dataclasses.replace(SKIN.rules, entropy_limit_bits=1.0))
    assert not calm.reliable
    assert base.reliable

    ak_top = skin(ak=0.7, nevus=0.3)
    assert interpret(ak_top, SKIN).risk == "moderate"
    assert interpret(ak_top, SKIN, dataclasses.replace(SKIN.rules, watch_groups=())).risk == "low"
    assert interpret(ak_top, SKIN, dataclasses.replace(SKIN.rules, high_risk_groups=("premalignant",))).risk == "high"

    # The default is the bank's own rules, and nothing was mutated along the way.
    assert interpret(scores, SKIN) == base
    assert SKIN.rules.unclear_margin == 0.05
    assert wider.rules.unclear_margin == 0.10


def test_interpret_does_not_modify_scores():
    scores = skin(melanoma=0.30, bcc=0.25, nevus=0.20, sk=0.15, ak=0.10)
    before = scores.probabilities.copy(), list(scores.condition_ids)
    interpret(scores, SKIN)
    assert np.array_equal(scores.probabilities, before[0])
    assert scores.condition_ids == before[1]


def test_alerts_use_each_conditions_threshold():
    reading = interpret(skin(melanoma=0.30, bcc=0.25, nevus=0.20, sk=0.15, ak=0.10), SKIN)
    assert reading.alerts == ["melanoma"]  # 0.30 >= 0.25; bcc 0.25 < 0.30
    assert interpret(skin(nevus=0.70, sk=0.30), SKIN).alerts == ["nevus"]


def test_steps_explain_the_reasoning():
    reading = interpret(skin(melanoma=0.30, bcc=0.25, nevus=0.20, sk=0.15, ak=0.10), SKIN)
    text = " ".join(reading.steps)
    for fragment in ("Ranked 6 conditions", "margin = 0.350", "Not-clear check", "Confidence", "Entropy", "Risk: high"):
        assert fragment in text
    assert all(isinstance(step, str) and step for step in reading.steps)


def test_unnormalised_float32_scores_are_renormalised():
    scores = make_scores({"a": 0.7, "b": 0.3}, dtype=np.float32)
    scores.probabilities = scores.probabilities * np.float32(0.999999)
    reading = interpret(scores, PAIR)
    assert sum(r.probability for r in reading.ranking) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "scores, message",
    [
        (Scores(["a", "b"], np.zeros(3), np.array([0.5, 0.25, 0.25]), np.zeros(3)), "2 condition ids but 3"),
        (Scores(["a", "zzz"], np.zeros(2), np.array([0.5, 0.5]), np.zeros(2)), "zzz"),
        (Scores([], np.zeros(0), np.zeros(0), np.zeros(0)), "no conditions"),
        (Scores(["a", "b"], np.zeros(2), np.array([np.nan, 0.5]), np.zeros(2)), "finite"),
    ],
)
def test_malformed_scores_are_rejected(scores, message):
    with pytest.raises(ValueError, match=message):
        interpret(scores, PAIR)


def test_shipped_dermatology_bank_end_to_end():
    bank = load_prompt_bank(PROMPTS / "dermatology.toml")
    ids = [c.id for c in bank.conditions]
    p = {i: 0.01 for i in ids}
    p.update(melanoma=0.30, basal_cell_carcinoma=0.25, melanocytic_nevus=0.20)
    p["normal_skin"] = 1 - sum(v for k, v in p.items() if k != "normal_skin")
    reading = interpret(make_scores(p), bank)
    assert reading.headline.id == "melanoma"
    assert reading.consolidated_ids == ["melanoma", "basal_cell_carcinoma"]
    assert reading.margin == pytest.approx(0.35)
    assert reading.risk == "high"
    assert reading.confidence == "plausible"
