"""Triage tiers from bank rules, combined with the quality and scope gates' verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from webapp.interfaces import CANT_ASSESS, Scores
from webapp.interpret import interpret, triage
from webapp.prompt_bank import PromptBankError, load_prompt_bank, parse_prompt_bank
from webapp.quality import QualityCheck, QualityReport
from webapp.scope import ScopeVerdict, judge_scope, scope_score

ROOT = Path(__file__).resolve().parents[1]
BANK = load_prompt_bank(ROOT / "prompts" / "dermatology.toml")
CHEST = load_prompt_bank(ROOT / "prompts" / "chest_xray.toml")


def scores(bank=BANK, scope=None, **probabilities) -> Scores:
    ids = [c.id for c in bank.conditions]
    rest = (1.0 - sum(probabilities.values())) / (len(ids) - len(probabilities))
    p = np.array([probabilities.get(cid, rest) for cid in ids])
    s = Scores(ids, np.log(p), p, np.zeros(len(ids)))
    if scope is not None:
        n_in, n_out = len(bank.scope.in_scope), len(bank.scope.out_of_scope)
        s.scope_probabilities = np.array([scope / n_in] * n_in + [(1 - scope) / n_out] * n_out)
    return s


PASSED = QualityReport((QualityCheck("sharpness", 0.6, 0.15, True),))
BLURRED = QualityReport((QualityCheck("sharpness", 0.01, 0.15, False, BANK.quality.hint("sharpness")),))


def test_a_clear_melanoma_is_refer_urgently_with_advice():
    reading = interpret(scores(melanoma=0.8), BANK)
    result = triage(reading, BANK, PASSED, ScopeVerdict(True, 0.9, ""))
    assert (result.assessable, result.tier, result.tier_label) == (True, "refer_urgently", "Refer urgently")
    assert result.show_advice


def test_a_clear_benign_mole_is_monitor_with_advice():
    result = triage(interpret(scores(melanocytic_nevus=0.85), BANK), BANK, PASSED)
    assert result.tier == "monitor" and result.show_advice and result.assessable


def test_an_unclear_result_never_shows_reassuring_text():
    # "Unclear ... low reliability" over a lesion must not say "normal, healthy skin".
    reading = interpret(scores(normal_skin=0.30, melanoma=0.28), BANK)
    assert reading.risk == "unclear"
    result = triage(reading, BANK, PASSED)
    assert result.tier == "refer" and not result.show_advice


def test_a_spread_out_ranking_is_not_monitor():
    reading = interpret(scores(normal_skin=0.2, melanoma=0.01, basal_cell_carcinoma=0.01, squamous_cell_carcinoma=0.01, bowens_disease=0.01), BANK)
    assert not reading.reliable and reading.risk == "low"
    result = triage(reading, BANK, PASSED)
    assert result.tier == "refer" and not result.show_advice


def test_a_high_risk_minority_is_refer_not_refer_urgently():
    reading = interpret(scores(melanoma=0.40, melanocytic_nevus=0.30), BANK)
    assert reading.risk == "high" and reading.high_risk_probability < 0.5
    assert triage(reading, BANK, PASSED).tier == "refer"


def test_a_failed_quality_gate_is_cant_assess_with_the_retake_hint():
    result = triage(interpret(scores(melanocytic_nevus=0.9), BANK), BANK, BLURRED)
    assert (result.assessable, result.tier, result.tier_label) == (False, CANT_ASSESS, "Can't assess")
    assert not result.show_advice
    assert result.reasons == [BANK.quality.hint("sharpness")]


def test_analyse_anyway_gives_a_tier_marked_low_quality_and_no_advice():
    result = triage(interpret(scores(melanocytic_nevus=0.9), BANK), BANK, BLURRED, analyse_anyway=True)
    assert result.low_quality and not result.assessable and not result.show_advice
    assert result.tier == "monitor" and result.reasons


def test_out_of_scope_is_never_overridden():
    verdict = judge_scope(scores(scope=0.1), BANK)
    assert verdict.in_scope is False and verdict.message == "This does not look like a skin photo."
    result = triage(interpret(scores(melanoma=0.9), BANK), BANK, PASSED, verdict, analyse_anyway=True)
    assert result.tier == CANT_ASSESS and not result.show_advice
    assert result.reasons == ["This does not look like a skin photo."]


def test_the_scope_score_is_the_in_scope_share():
    assert scope_score(scores(scope=0.7), BANK) == pytest.approx(0.7)
    assert judge_scope(scores(scope=0.7), BANK).in_scope is True
    assert judge_scope(scores(scope=0.5), BANK).in_scope is True  # the limit itself is in scope
    assert judge_scope(scores(), BANK).in_scope is None  # nothing scored: no verdict
    chest = judge_scope(scores(CHEST, scope=0.2), CHEST)
    assert chest.message == "This does not look like a chest X-ray."


def test_demo_mode_scope_gate_says_it_cannot_judge():
    verdict = judge_scope(scores(scope=0.01), BANK, demo=True)
    assert verdict.in_scope is None and "cannot judge" in verdict.message
    result = triage(interpret(scores(melanoma=0.9), BANK), BANK, PASSED, verdict)
    assert result.assessable and result.tier == "refer_urgently"


def test_chest_xray_tiers():
    assert triage(interpret(scores(CHEST, pneumothorax=0.8), CHEST), CHEST, PASSED).tier == "refer_urgently"
    assert triage(interpret(scores(CHEST, normal_chest=0.85), CHEST), CHEST, PASSED).tier == "routine"


BASE = """
name = "t"
group_tags = ["benign", "malignant"]
[rules]
high_risk_groups = ["malignant"]
[template_sets.a]
templates = ["a {}."]
[[conditions]]
label = "X"
groups = ["benign"]
descriptions = ["x"]
"""


def test_triage_rules_must_catch_every_result():
    import tomllib

    bad = BASE + '[[triage.tiers]]\nid = "monitor"\nlabel = "Monitor"\nmeaning = "m"\nrisks = ["low"]\n'
    with pytest.raises(PromptBankError, match="no tier catches every result of risk 'high'"):
        parse_prompt_bank(tomllib.loads(bad))
    reserved = BASE + '[[triage.tiers]]\nid = "cant_assess"\nlabel = "C"\nmeaning = "m"\nrisks = ["low"]\n'
    with pytest.raises(PromptBankError, match="reserved for the gates"):
        parse_prompt_bank(tomllib.loads(reserved))
    advice = BASE + '[triage]\nadvice_confidence = ["unclear"]\n[[triage.tiers]]\nid = "r"\nlabel = "R"\nmeaning = "m"\nrisks = ["low", "high", "moderate", "unclear"]\n'
    with pytest.raises(PromptBankError, match="cannot include the fallback"):
        parse_prompt_bank(tomllib.loads(advice))
    scope = BASE + '[scope]\nsubject = "a skin photo"\nin_scope = ["skin"]\n'
    with pytest.raises(PromptBankError, match="out_of_scope must be a non-empty list"):
        parse_prompt_bank(tomllib.loads(scope))


def test_every_shipped_bank_declares_scope_quality_and_tiers():
    for bank in (BANK, CHEST):
        assert bank.scope.enabled and bank.scope.min_score == 0.5
        assert {"refer_urgently", "refer"} <= {t.id for t in bank.triage.tiers}
    assert BANK.triage.skin_tone_caution_bands == ("brown", "dark")
    assert "0.57" in BANK.triage.skin_tone_caution
