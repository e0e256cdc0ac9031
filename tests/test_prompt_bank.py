"""The shipped prompt banks, and the validator's messages for broken ones."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from webapp.prompt_bank import (
    PromptBankError,
    load_prompt_bank,
    parse_prompt_bank,
    snomed_ct_problem,
)

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
BANKS = {"dermatology.toml": 15, "chest_xray.toml": 9}  # file -> minimum number of conditions
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# SigLIP's text tower reads 64 tokens. Words are a crude stand-in for tokens:
# medical words split into several pieces, so allow well under 64 words.
MAX_PROMPT_WORDS = 45
MAX_PROMPT_PIECES = 60  # words and punctuation marks counted separately


@pytest.fixture(params=sorted(BANKS))
def bank_file(request) -> Path:
    return PROMPTS / request.param


def test_shipped_bank_loads_and_validates(bank_file):
    bank = load_prompt_bank(bank_file)
    assert bank.name == bank_file.stem
    assert bank.title and bank.title != bank.name
    assert len(bank.conditions) >= BANKS[bank_file.name]
    assert bank.content_hash
    assert bank.template_sets


def test_every_condition_is_complete(bank_file):
    bank = load_prompt_bank(bank_file)
    for condition in bank.conditions:
        where = f"{bank_file.name}: {condition.id}"
        assert SNAKE_CASE.match(condition.id), where
        assert condition.label.strip(), where
        assert condition.groups and set(condition.groups) <= set(bank.group_tags), where
        assert 2 <= len(condition.descriptions) <= 3, where
        assert all(d.strip() and not d.endswith(".") for d in condition.descriptions), where
        assert condition.summary.strip(), where
        # Two or three plain sentences that end by saying when to see a doctor.
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", condition.summary.strip()) if s]
        assert 2 <= len(sentences) <= 3, (where, sentences)
        assert re.search(r"\b(doctor|dermatologist|clinician|radiologist|medical (care|help|attention))\b",
                         condition.summary), where
        assert 0.0 <= condition.alert_threshold <= 1.0, where
        if "normal" not in condition.groups:
            assert condition.icd10, f"{where} has no ICD-10 code"
        if condition.snomed_ct:
            assert snomed_ct_problem(condition.snomed_ct) is None, where


def test_codes_and_labels_are_unique(bank_file):
    bank = load_prompt_bank(bank_file)
    for attribute in ("id", "label", "snomed_ct", "icd10"):
        values = [getattr(c, attribute) for c in bank.conditions if getattr(c, attribute)]
        assert len(values) == len(set(values)), attribute


def test_templates_hold_one_placeholder_and_prompts_fit_the_text_tower(bank_file):
    bank = load_prompt_bank(bank_file)
    for template_set in bank.template_sets:
        assert template_set.label
        for template in template_set.templates:
            assert template.count("{}") == 1, template
        for condition in bank.conditions:
            for prompt in bank.prompts_for(condition, template_set):
                assert "{" not in prompt and "}" not in prompt
                assert len(prompt.split()) <= MAX_PROMPT_WORDS, prompt
                assert len(re.findall(r"\w+|[^\w\s]", prompt)) <= MAX_PROMPT_PIECES, prompt


def test_rules_name_groups_the_bank_uses(bank_file):
    bank = load_prompt_bank(bank_file)
    used = {group for condition in bank.conditions for group in condition.groups}
    assert bank.rules.high_risk_groups and set(bank.rules.high_risk_groups) <= used
    assert set(bank.rules.watch_groups) <= used
    labels = [level.label for level in bank.rules.confidence_levels]
    assert labels == ["confident", "plausible", "low confidence"]
    assert [level.min_margin for level in bank.rules.confidence_levels] == [0.40, 0.20, 0.10]
    assert bank.rules.fallback_confidence == "unclear"
    assert bank.rules.unclear_margin == 0.05


def test_dermatology_bank_content():
    bank = load_prompt_bank(PROMPTS / "dermatology.toml")
    ids = {c.id for c in bank.conditions}
    assert {
        "melanoma", "basal_cell_carcinoma", "squamous_cell_carcinoma", "bowens_disease", "actinic_keratosis",
        "melanocytic_nevus", "seborrheic_keratosis", "dermatofibroma", "psoriasis", "atopic_dermatitis",
        "acne_vulgaris", "rosacea", "herpes_zoster", "verruca_vulgaris", "molluscum_contagiosum",
        "tinea_corporis", "cherry_angioma", "normal_skin",
    } <= ids
    assert bank.rules.high_risk_groups == ("malignant",)
    assert bank.rules.watch_groups == ("premalignant",)
    assert bank.rules.entropy_limit_bits == 2.5
    clinical, dermoscopy = bank.template_set("clinical"), bank.template_set("dermoscopy")
    assert clinical.label == "Clinical photo" and dermoscopy.label == "Dermoscopy"
    assert len(clinical.templates) >= 4 and len(dermoscopy.templates) >= 4
    assert "A patient-submitted smartphone photograph showing {}." in clinical.templates
    assert "Dermoscopy image revealing {}." in dermoscopy.templates
    assert bank.template_set() == clinical  # the first set is the default
    malignant = [c for c in bank.conditions if "malignant" in c.groups]
    benign = [c for c in bank.conditions if "benign" in c.groups]
    assert {c.id for c in malignant} == {"melanoma", "basal_cell_carcinoma", "squamous_cell_carcinoma", "bowens_disease"}
    assert max(c.alert_threshold for c in malignant) <= 0.35
    assert min(c.alert_threshold for c in benign) > max(c.alert_threshold for c in malignant)
    assert bank.condition("melanoma").icd10 == "C43.9"


def test_chest_xray_bank_content():
    bank = load_prompt_bank(PROMPTS / "chest_xray.toml")
    assert bank.rules.high_risk_groups == ("urgent",)
    assert bank.rules.watch_groups == ("abnormal",)
    frontal = bank.template_set("frontal")
    assert frontal.label == "Frontal chest X-ray (PA/AP)"
    assert len(frontal.templates) >= 3
    assert "pneumothorax" in {c.id for c in bank.conditions if "urgent" in c.groups}
    assert {"normal", "abnormal", "urgent"} == {g for c in bank.conditions for g in c.groups}


# --- validation errors ----------------------------------------------------

GOOD_HEAD = """
name = "test"
title = "Test bank"
group_tags = ["malignant", "premalignant", "benign", "normal", "urgent", "abnormal"]

[template_sets.photo]
label = "Photo"
templates = ["A photo of {}."]
"""

MELANOMA = """
[[conditions]]
id = "melanoma"
label = "Melanoma"
groups = ["malignant"]
descriptions = ["melanoma"]
snomed_ct = "93655004"
icd10 = "C43.9"
alert_threshold = 0.3
"""

RULES = """
[rules]
high_risk_groups = ["malignant"]
"""

NEVUS = """
[[conditions]]
id = "nevus"
label = "Nevus"
groups = ["benign"]
descriptions = ["a mole"]
snomed_ct = "400096001"
icd10 = "D22.9"
"""


def parse(text: str):
    return parse_prompt_bank(tomllib.loads(text), source="test.toml")


def error_of(text: str) -> str:
    with pytest.raises(PromptBankError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("test.toml: ")
    return message


def test_minimal_valid_bank_parses():
    bank = parse(GOOD_HEAD + RULES + MELANOMA + NEVUS)
    assert [c.id for c in bank.conditions] == ["melanoma", "nevus"]
    assert bank.condition("nevus").alert_threshold == 0.5  # default
    assert bank.rules.high_risk_groups == ("malignant",)
    assert bank.rules.watch_groups == ()  # nothing watched unless the bank says so
    assert "malignant" in bank.group_tags


def test_a_bank_must_say_which_groups_are_high_risk():
    # The core has no dermatology default any more: a bank without high-risk
    # groups could never report "high", a silent under-triage.
    assert "rules: high_risk_groups is missing" in error_of(GOOD_HEAD + MELANOMA + NEVUS)
    assert "rules: high_risk_groups must name at least one group tag" in error_of(
        GOOD_HEAD + '[rules]\nhigh_risk_groups = []\n' + MELANOMA
    )


def test_a_bank_declares_its_group_tags():
    without = GOOD_HEAD.replace('group_tags = ["malignant", "premalignant", "benign", "normal", "urgent", "abnormal"]\n', "")
    assert "group_tags must list the bank's group tags" in error_of(without + RULES + MELANOMA)
    # Any tag the bank declares is fine, whatever the modality calls it.
    own = GOOD_HEAD.replace('"urgent", "abnormal"]', '"urgent", "abnormal", "vascular"]')
    bank = parse(own + '[rules]\nhigh_risk_groups = ["vascular"]\n' + MELANOMA.replace('["malignant"]', '["vascular"]'))
    assert bank.rules.high_risk_groups == ("vascular",)
    assert bank.condition("melanoma").groups == ("vascular",)


def test_rules_may_only_use_declared_group_tags():
    message = error_of(GOOD_HEAD + '[rules]\nhigh_risk_groups = ["malignent"]\n' + MELANOMA)
    assert "rules: high_risk_groups has unknown group tag(s) malignent" in message


def test_missing_label_names_the_condition():
    message = error_of(GOOD_HEAD + MELANOMA + '[[conditions]]\nid = "mystery"\ngroups = ["benign"]\ndescriptions = ["x"]\n')
    assert "condition 2 (id 'mystery'): missing label" in message


def test_blank_label_is_missing():
    message = error_of(GOOD_HEAD + '[[conditions]]\nlabel = "  "\ngroups = ["benign"]\ndescriptions = ["x"]\n')
    assert "condition 1: missing label" in message


def test_duplicate_labels_are_named():
    message = error_of(GOOD_HEAD + MELANOMA + MELANOMA.replace('id = "melanoma"', 'id = "melanoma2"')
                       .replace("93655004", "372244006").replace("C43.9", "C43.8"))
    assert "condition 'Melanoma': duplicate label 'Melanoma'" in message


def test_labels_differing_only_in_case_are_duplicates():
    other = NEVUS.replace('label = "Nevus"', 'label = "MELANOMA"')
    assert "duplicate label 'MELANOMA'" in error_of(GOOD_HEAD + MELANOMA + other)


def test_duplicate_ids_are_named():
    other = NEVUS.replace('id = "nevus"', 'id = "melanoma"')
    assert "condition 'Nevus': duplicate id 'melanoma' (also used by condition 'Melanoma')" in error_of(
        GOOD_HEAD + MELANOMA + other
    )


@pytest.mark.parametrize("key, value", [("snomed_ct", "93655004"), ("icd10", "C43.9")])
def test_duplicate_codes_name_both_conditions(key, value):
    other = re.sub(rf'{key} = "[^"]*"', f'{key} = "{value}"', NEVUS)
    message = error_of(GOOD_HEAD + MELANOMA + other)
    assert f"condition 'Nevus': duplicate {key} '{value}' (also used by condition 'Melanoma')" in message


@pytest.mark.parametrize("value", ["1.5", "-0.1", "true", '"high"'])
def test_threshold_outside_unit_interval(value):
    message = error_of(GOOD_HEAD + MELANOMA.replace("alert_threshold = 0.3", f"alert_threshold = {value}"))
    assert "condition 'Melanoma': alert_threshold" in message
    assert "outside [0, 1]" in message


@pytest.mark.parametrize("value", ["0", "1", "0.0", "1.0"])
def test_threshold_bounds_are_allowed(value):
    parse(GOOD_HEAD + RULES + MELANOMA.replace("alert_threshold = 0.3", f"alert_threshold = {value}"))


def test_unknown_group_tag_is_named():
    message = error_of(GOOD_HEAD + MELANOMA.replace('["malignant"]', '["malignent"]'))
    assert "condition 'Melanoma': unknown group tag(s) malignent" in message
    assert "the bank's group_tags: malignant" in message


def test_groups_must_be_a_list():
    message = error_of(GOOD_HEAD + MELANOMA.replace('["malignant"]', '"malignant"'))
    assert "condition 'Melanoma': groups must be a list" in message


def test_missing_groups_and_descriptions():
    message = error_of(GOOD_HEAD + '[[conditions]]\nlabel = "Bare"\n')
    assert "condition 'Bare': needs at least one group tag" in message
    assert "condition 'Bare': needs at least one description" in message


@pytest.mark.parametrize(
    "template, problem",
    [
        ("A photo of skin.", "must contain '{}' exactly once"),
        ("A photo of {} and {}.", "must contain '{}' exactly once"),
        ("A photo of {} from {site}.", "no other {...} field"),
        ("A photo of {} with a { brace.", "not a valid format string"),
    ],
)
def test_bad_template_names_set_and_template(template, problem):
    message = error_of(GOOD_HEAD.replace('"A photo of {}."', repr(template).replace("'", '"')) + MELANOMA)
    assert f"template set 'photo': template {template!r}" in message
    assert problem in message


def test_template_set_without_templates():
    message = error_of(GOOD_HEAD.replace('templates = ["A photo of {}."]', "templates = []") + MELANOMA)
    assert "template set 'photo': no templates" in message


def test_no_conditions():
    assert "no [[conditions]]" in error_of(GOOD_HEAD)
    assert "no [[conditions]]" in error_of("conditions = []\n" + GOOD_HEAD)


def test_no_template_sets():
    assert "no [template_sets]" in error_of('name = "x"\n' + MELANOMA)


def test_conditions_must_be_tables():
    assert "condition 1: must be a table" in error_of('conditions = ["melanoma"]\n' + GOOD_HEAD)


@pytest.mark.parametrize(
    "code, problem",
    [("93655005", "check digit"), ("9365500x", "6 to 18 digits"), ("123", "6 to 18 digits")],
)
def test_snomed_ct_ids_are_checked(code, problem):
    message = error_of(GOOD_HEAD + MELANOMA.replace("93655004", code))
    assert f"condition 'Melanoma': snomed_ct '{code}'" in message
    assert problem in message


def test_snomed_ct_without_quotes_is_accepted():
    bank = parse(GOOD_HEAD + RULES + MELANOMA.replace('"93655004"', "93655004"))
    assert bank.condition("melanoma").snomed_ct == "93655004"


def test_icd10_format_is_checked():
    message = error_of(GOOD_HEAD + MELANOMA.replace("C43.9", "melanoma"))
    assert "condition 'Melanoma': icd10 'melanoma' does not look like an ICD-10 code" in message


def test_bad_rules_are_reported_not_crashed():
    rules = """
[rules]
high_risk_groups = "malignant"
watch_groups = ["malignant"]
unclear_margin = -1
confidence_levels = [{ label = "confident" }, { min_margin = 2.0, label = "sure" }]
"""
    message = error_of(GOOD_HEAD + rules + MELANOMA)
    assert "rules: high_risk_groups must be a list of group tags" in message
    assert "rules: unclear_margin must be a non-negative number" in message
    assert "rules: confidence level 1 needs a numeric min_margin and a label" in message
    assert "rules: confidence level 'sure' min_margin 2.0 is outside [0, 1]" in message


def test_group_cannot_be_high_risk_and_watched():
    rules = '[rules]\nhigh_risk_groups = ["malignant"]\nwatch_groups = ["malignant"]\n'
    assert "cannot be both high risk and watch" in error_of(GOOD_HEAD + rules + MELANOMA)


def test_all_errors_are_reported_together():
    message = error_of(
        GOOD_HEAD.replace('"A photo of {}."', '"A photo."')
        + MELANOMA.replace("alert_threshold = 0.3", "alert_threshold = 3")
        + NEVUS.replace('["benign"]', '["benin"]')
    )
    assert "template set 'photo'" in message
    assert "condition 'Melanoma': alert_threshold" in message
    assert "condition 'Nevus': unknown group tag(s) benin" in message


def test_rules_are_read_from_the_bank():
    rules = """
[rules]
high_risk_groups = ["urgent"]
watch_groups = ["abnormal"]
entropy_limit_bits = 3.0
unclear_margin = 0.1
fallback_confidence = "not sure"
confidence_levels = [{ min_margin = 0.1, label = "some" }, { min_margin = 0.5, label = "strong" }]
"""
    bank = parse(GOOD_HEAD + rules + MELANOMA)
    assert bank.rules.high_risk_groups == ("urgent",)
    assert bank.rules.entropy_limit_bits == 3.0
    assert [level.label for level in bank.rules.confidence_levels] == ["strong", "some"]  # highest first
    assert bank.rules.fallback_confidence == "not sure"


def test_load_reports_invalid_toml(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[[conditions]\n')
    with pytest.raises(PromptBankError, match=r"^broken.toml: not valid TOML"):
        load_prompt_bank(broken)


def test_content_hash_follows_the_file(tmp_path):
    first = tmp_path / "a.toml"
    first.write_text(GOOD_HEAD + RULES + MELANOMA)
    second = tmp_path / "b.toml"
    second.write_text(GOOD_HEAD + RULES + MELANOMA.replace('descriptions = ["melanoma"]', 'descriptions = ["a melanoma"]'))
    assert load_prompt_bank(first).content_hash != load_prompt_bank(second).content_hash
    assert load_prompt_bank(first).content_hash == load_prompt_bank(first).content_hash


@pytest.mark.parametrize(
    "code, ok",
    [("93655004", True), ("254701007", True), ("4740000", True), ("694006", False), ("12563001", False),
     ("0000000", False), ("93655004x", False)],
)
def test_snomed_ct_problem(code, ok):
    assert (snomed_ct_problem(code) is None) is ok
