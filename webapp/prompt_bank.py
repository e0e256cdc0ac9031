"""Read and validate prompt banks kept as TOML data files.

A bank is data, not code: conditions with their descriptions, codes and
summaries, template sets per kind of picture, and the interpretation rules.
Every mistake is reported with the file and the condition it is in, at
start-up, so a broken bank never reaches a patient's result.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import tomllib
from pathlib import Path
from typing import Any

from .interfaces import (
    Condition,
    ConfidenceLevel,
    CANT_ASSESS,
    InterpretationRules,
    PromptBank,
    ScopeRules,
    TemplateSet,
    TierRule,
    TriageRules,
)
from .quality import parse_quality_limits

# Ids end up in URLs, HTML attributes and cache keys.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A language code as the translations tables name them: "es", "pt_BR".
_LANGUAGE_PATTERN = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
# ICD-10 and ICD-10-CM: letter, two characters, optional dot and up to four more.
_ICD10_PATTERN = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")

# Verhoeff tables: every SNOMED CT identifier ends in a Verhoeff check digit,
# which catches most mistyped (or invented) concept ids.
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def snomed_ct_problem(value: str) -> str | None:
    """Why ``value`` cannot be a SNOMED CT concept id, or None if it can be one."""
    if not value.isdigit() or not 6 <= len(value) <= 18 or value.startswith("0"):
        return "must be 6 to 18 digits"
    check = 0
    for position, digit in enumerate(reversed(value)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(digit)]]
    if check != 0:
        return "fails the SNOMED CT check digit (mistyped?)"
    if value[-3:-1] not in ("00", "10"):  # partition identifier of a concept
        return "is not a concept id (partition is not 00 or 10)"
    return None


class PromptBankError(ValueError):
    """A bank file that cannot be used, with a message that says where and why."""


def load_prompt_bank(path: str | Path) -> PromptBank:
    """Parse and validate one bank file."""
    path = Path(path)
    raw_bytes = path.read_bytes()
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PromptBankError(f"{path.name}: not valid TOML ({exc})") from exc
    return parse_prompt_bank(data, source=path.name, content=raw_bytes)


def parse_prompt_bank(data: dict[str, Any], source: str = "bank", content: bytes | None = None) -> PromptBank:
    errors: list[str] = []
    name = data.get("name")
    if not isinstance(name, str) or not name:
        errors.append("missing 'name'")
    conditions = _parse_conditions(data.get("conditions"), errors)
    group_tags = _parse_group_tags(data.get("group_tags"), conditions, errors)
    template_sets = _parse_template_sets(data.get("template_sets"), errors)
    rules = _parse_rules(data.get("rules", {}), group_tags, errors)
    quality = parse_quality_limits(data.get("quality"), errors)
    scope = _parse_scope(data.get("scope"), errors)
    triage = _parse_triage(data.get("triage"), rules, errors)
    translations = parse_translations(data.get("translations"), {"title"}, "bank", errors)
    if errors:
        raise PromptBankError(f"{source}: " + "; ".join(errors))
    # The hash names what the model sees, so translations (words for people only) leave it alone:
    # adding a language never invalidates cached text embeddings or a clinic's adapter.
    canonical = json.dumps(_without_translations(data), sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    return PromptBank(
        name=name,
        title=str(data.get("title", name)),
        conditions=tuple(conditions),
        template_sets=tuple(template_sets),
        rules=rules,
        group_tags=group_tags,
        content_hash=digest,
        quality=quality,
        scope=scope,
        triage=triage,
        translations=translations,
    )


def _without_translations(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_translations(item) for key, item in value.items() if key != "translations"}
    if isinstance(value, list):
        return [_without_translations(item) for item in value]
    return value


def parse_translations(raw: Any, allowed: set[str], where: str, errors: list[str]) -> dict[str, dict[str, str]]:
    """A ``translations`` table: language code -> {key: text}, keys from ``allowed``.

    A translation may leave a key out (the English stays); a key it gives must
    be a non-empty string. Whitespace is normalised like the English texts'.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: translations must be a table of language codes, e.g. [....translations.es]")
        return {}
    parsed: dict[str, dict[str, str]] = {}
    for code, entry in raw.items():
        if not _LANGUAGE_PATTERN.match(code):
            errors.append(f"{where}: translations: {code!r} is not a language code (e.g. es, pt_BR)")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{where}: translations.{code} must be a table")
            continue
        unknown = sorted(set(entry) - allowed)
        if unknown:
            errors.append(f"{where}: translations.{code}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
        texts = {}
        for key in sorted(set(entry) & allowed):
            value = entry[key]
            if isinstance(value, dict):  # a mapping of words (confidence labels)
                if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()):
                    errors.append(f"{where}: translations.{code}.{key} must map words to non-empty strings")
                    continue
                texts[key] = {k: " ".join(v.split()) for k, v in value.items()}
            elif not isinstance(value, str) or not value.strip():
                errors.append(f"{where}: translations.{code}.{key} must be a non-empty string")
            else:
                texts[key] = " ".join(value.split())
        parsed[code] = texts
    return parsed


def _is_number(value: Any) -> bool:
    # TOML booleans are Python bools, which are ints: "true" is not a threshold.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_list(value: Any) -> list[str] | None:
    """The value as a list of strings, or None when it is not one (a bare string is not)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def _parse_conditions(raw: Any, errors: list[str]) -> list[Condition]:
    if not isinstance(raw, list) or not raw:
        errors.append("no [[conditions]]")
        return []
    conditions: list[Condition] = []
    # value -> label of the condition that used it first, to name both in an error
    seen: dict[str, dict[str, str]] = {"id": {}, "label": {}, "snomed_ct": {}, "icd10": {}}
    for position, entry in enumerate(raw, start=1):
        where = f"condition {position}"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a table ([[conditions]]), got {type(entry).__name__}")
            continue
        label = entry.get("label")
        if not isinstance(label, str) or not label.strip():
            named = f" (id {entry['id']!r})" if isinstance(entry.get("id"), str) and entry["id"] else ""
            errors.append(f"{where}{named}: missing label")
            continue
        label = label.strip()
        where = f"condition '{label}'"
        if "id" in entry:
            condition_id = entry["id"]
            if not isinstance(condition_id, str) or not _ID_PATTERN.match(condition_id):
                errors.append(f"{where}: id {condition_id!r} must be letters, digits, '_', '.' or '-'")
                condition_id = str(condition_id)
        else:
            condition_id = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or f"condition_{position}"

        descriptions = entry.get("descriptions") or []
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if (
            not isinstance(descriptions, list)
            or not descriptions
            or not all(isinstance(d, str) and d.strip() for d in descriptions)
        ):
            errors.append(f"{where}: needs at least one description")
            descriptions = []
        descriptions = [d.strip() for d in descriptions]

        groups = _string_list(entry.get("groups", []))
        if groups is None:
            errors.append(f"{where}: groups must be a list of group tags, e.g. [\"benign\"]")
            groups = []
        elif not groups:
            errors.append(f"{where}: needs at least one group tag")

        threshold = entry.get("alert_threshold", 0.5)
        if not _is_number(threshold) or not 0.0 <= float(threshold) <= 1.0:
            errors.append(f"{where}: alert_threshold {threshold!r} is outside [0, 1]")
            threshold = 0.5

        codes: dict[str, str] = {}
        for key in ("snomed_ct", "icd10"):
            value = entry.get(key, "")
            if key == "snomed_ct" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # snomed_ct = 93655004 without quotes is fine
            if not isinstance(value, str):
                errors.append(f"{where}: {key} must be a string, got {value!r}")
                value = ""
            value = value.strip()
            if value and key == "snomed_ct" and (problem := snomed_ct_problem(value)):
                errors.append(f"{where}: snomed_ct {value!r} {problem}")
            if value and key == "icd10" and not _ICD10_PATTERN.match(value):
                errors.append(f"{where}: icd10 {value!r} does not look like an ICD-10 code (e.g. C43.9)")
            codes[key] = value

        summary = entry.get("summary", "")
        if not isinstance(summary, str):
            errors.append(f"{where}: summary must be a string")
            summary = ""

        values = {"id": condition_id, "label": label.casefold(), **codes}
        for key, value in values.items():
            if not value:
                continue
            if value in seen[key]:
                shown = label if key == "label" else value
                errors.append(f"{where}: duplicate {key} {shown!r} (also used by condition '{seen[key][value]}')")
            else:
                seen[key][value] = label
        conditions.append(
            Condition(
                id=condition_id,
                label=label,
                groups=tuple(groups),
                descriptions=tuple(descriptions),
                snomed_ct=codes["snomed_ct"],
                icd10=codes["icd10"],
                summary=summary.strip(),
                alert_threshold=float(threshold),
                translations=parse_translations(entry.get("translations"), {"label", "summary"}, where, errors),
            )
        )
    return conditions


def _template_problem(template: Any) -> str | None:
    """Why a template cannot be filled with one description, or None if it can."""
    if not isinstance(template, str):
        return "is not a string"
    if template.count("{}") != 1:
        return "must contain '{}' exactly once"
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        return f"is not a valid format string ({exc}); write a literal brace as '{{{{' or '}}}}'"
    if fields != [""]:
        return "must contain '{}' exactly once and no other {...} field"
    return None


def _parse_template_sets(raw: Any, errors: list[str]) -> list[TemplateSet]:
    if not isinstance(raw, dict) or not raw:
        errors.append("no [template_sets]")
        return []
    template_sets: list[TemplateSet] = []
    for set_id, entry in raw.items():
        where = f"template set '{set_id}'"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a table with 'label' and 'templates'")
            continue
        if not _ID_PATTERN.match(set_id):
            errors.append(f"{where}: id must be letters, digits, '_', '.' or '-'")
        templates = entry.get("templates") or []
        if not isinstance(templates, list):
            errors.append(f"{where}: templates must be a list of strings")
            templates = []
        if not templates:
            errors.append(f"{where}: no templates")
        for template in templates:
            problem = _template_problem(template)
            if problem:
                errors.append(f"{where}: template {template!r} {problem}")
        if len(set(t for t in templates if isinstance(t, str))) != len(templates):
            errors.append(f"{where}: the same template is listed twice")
        template_sets.append(TemplateSet(
            id=set_id, label=str(entry.get("label", set_id)), templates=tuple(templates),
            translations=parse_translations(entry.get("translations"), {"label"}, where, errors),
        ))
    return template_sets


def _parse_group_tags(raw: Any, conditions: list[Condition], errors: list[str]) -> tuple[str, ...]:
    """``group_tags``: every tag the bank's conditions and rules may use, declared by the bank.

    The core knows no group of its own (a skin bank speaks of "malignant", a
    chest bank of "urgent"); declaring them lets a mistyped tag in a condition
    or in the rules fail at start-up instead of silently matching nothing.
    """
    tags = _string_list(raw)
    if tags is None or not tags or not all(_ID_PATTERN.match(tag) for tag in tags):
        errors.append('group_tags must list the bank\'s group tags, e.g. group_tags = ["benign", "malignant"]')
        return ()
    if len(set(tags)) != len(tags):
        errors.append("group_tags lists the same tag twice")
    for condition in conditions:
        unknown = sorted(set(condition.groups) - set(tags))
        if unknown:
            errors.append(
                f"condition '{condition.label}': unknown group tag(s) {', '.join(unknown)} "
                f"(the bank's group_tags: {', '.join(tags)})"
            )
    return tuple(tags)


def _parse_rules(raw: Any, group_tags: tuple[str, ...], errors: list[str]) -> InterpretationRules:
    defaults = InterpretationRules()
    if not isinstance(raw, dict):
        errors.append("rules: [rules] must be a table")
        return defaults
    levels = raw.get("confidence_levels")
    if levels is None:
        parsed_levels = defaults.confidence_levels
    else:
        parsed: list[ConfidenceLevel] = []
        if not isinstance(levels, list) or not levels:
            errors.append("rules: confidence_levels must be a non-empty list of {min_margin, label} tables")
            levels = []
        for position, level in enumerate(levels, start=1):
            if (
                not isinstance(level, dict)
                or not _is_number(level.get("min_margin"))
                or not isinstance(level.get("label"), str)
                or not level["label"].strip()
            ):
                errors.append(f"rules: confidence level {position} needs a numeric min_margin and a label")
                continue
            if not 0.0 <= float(level["min_margin"]) <= 1.0:
                errors.append(f"rules: confidence level '{level['label']}' min_margin {level['min_margin']!r} is outside [0, 1]")
            parsed.append(ConfidenceLevel(float(level["min_margin"]), level["label"].strip()))
        labels = [level.label for level in parsed]
        if len(set(labels)) != len(labels):
            errors.append("rules: confidence level labels must be distinct")
        parsed_levels = tuple(sorted(parsed, key=lambda level: -level.min_margin))
    for key in ("entropy_limit_bits", "unclear_margin"):
        value = raw.get(key, getattr(defaults, key))
        if not _is_number(value) or value < 0:
            errors.append(f"rules: {key} must be a non-negative number")
    group_lists: dict[str, tuple[str, ...]] = {}
    for key in ("high_risk_groups", "watch_groups"):
        value = _string_list(raw.get(key, list(getattr(defaults, key))))
        if value is None:
            errors.append(f"rules: {key} must be a list of group tags")
            value = []
        unknown = sorted(set(value) - set(group_tags))
        if unknown and group_tags:
            errors.append(f"rules: {key} has unknown group tag(s) {', '.join(unknown)} (the bank's group_tags: {', '.join(group_tags)})")
        group_lists[key] = tuple(value)
    # Which groups are high risk is the modality's call; without it no result
    # could ever read "high", which would be a silent under-triage.
    if not group_lists["high_risk_groups"] and "high_risk_groups" in raw:
        errors.append("rules: high_risk_groups must name at least one group tag")
    elif not group_lists["high_risk_groups"]:
        errors.append('rules: high_risk_groups is missing: say which group tags are high risk, e.g. [rules] high_risk_groups = ["malignant"]')
    overlap = sorted(set(group_lists["high_risk_groups"]) & set(group_lists["watch_groups"]))
    if overlap:
        errors.append(f"rules: group(s) {', '.join(overlap)} cannot be both high risk and watch")
    fallback = raw.get("fallback_confidence", defaults.fallback_confidence)
    if not isinstance(fallback, str) or not fallback.strip():
        errors.append("rules: fallback_confidence must be a non-empty string")
        fallback = defaults.fallback_confidence

    def number(key: str) -> float:
        value = raw.get(key, getattr(defaults, key))
        return float(value) if _is_number(value) else float(getattr(defaults, key))

    return InterpretationRules(
        high_risk_groups=group_lists["high_risk_groups"],
        watch_groups=group_lists["watch_groups"],
        entropy_limit_bits=number("entropy_limit_bits"),
        unclear_margin=number("unclear_margin"),
        confidence_levels=parsed_levels,
        fallback_confidence=fallback.strip(),
        translations=_confidence_translations(raw.get("translations"), parsed_levels, fallback.strip(), errors),
    )


def _confidence_translations(raw: Any, levels, fallback: str, errors: list[str]) -> dict[str, dict[str, str]]:
    """``[rules.translations.<code>.confidence_labels]``: each English confidence label -> its translation."""
    parsed = parse_translations(raw, {"confidence_labels"}, "rules", errors)
    known = {level.label for level in levels} | {fallback}
    result = {}
    for code, entry in parsed.items():
        labels = entry.get("confidence_labels", {})
        unknown = sorted(set(labels) - known)
        if unknown:
            errors.append(f"rules: translations.{code}.confidence_labels: {', '.join(unknown)} are not confidence labels")
        result[code] = {label: text for label, text in labels.items() if label in known}
    return result


RISKS = ("high", "moderate", "low", "unclear")
SKIN_TONE_BANDS = ("very_light", "light", "intermediate", "tan", "brown", "dark")


def _parse_scope(raw: Any, errors: list[str]) -> ScopeRules:
    """``[scope]``: subject, in_scope and out_of_scope prompts, min_score. Absent: no zero-shot scope gate."""
    if raw is None:
        return ScopeRules()
    if not isinstance(raw, dict):
        errors.append("scope: [scope] must be a table")
        return ScopeRules()
    lists = {}
    for key in ("in_scope", "out_of_scope"):
        value = _string_list(raw.get(key))
        if not value or not all(item.strip() for item in value):
            errors.append(f"scope: {key} must be a non-empty list of descriptions")
            value = []
        lists[key] = tuple(item.strip() for item in value)
    subject = raw.get("subject", "")
    if not isinstance(subject, str) or not subject.strip():
        errors.append("scope: subject must say what the pictures are, e.g. \"a skin photo\"")
        subject = "picture"
    min_score = raw.get("min_score", 0.5)
    if not _is_number(min_score) or not 0.0 < float(min_score) < 1.0:
        errors.append(f"scope: min_score {min_score!r} must be a number between 0 and 1")
        min_score = 0.5
    unknown = sorted(set(raw) - {"subject", "in_scope", "out_of_scope", "min_score", "translations"})
    if unknown:
        errors.append(f"scope: unknown key(s) {', '.join(unknown)}")
    translations = parse_translations(raw.get("translations"), {"subject"}, "scope", errors)
    return ScopeRules(subject.strip(), lists["in_scope"], lists["out_of_scope"], float(min_score), translations)


def _parse_triage(raw: Any, rules: InterpretationRules, errors: list[str]) -> TriageRules:
    """``[triage]`` with ``[[triage.tiers]]``: the headline tiers, first match wins."""
    defaults = TriageRules()
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        errors.append("triage: [triage] must be a table")
        return defaults
    tiers: list[TierRule] = []
    raw_tiers = raw.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        errors.append("triage: needs at least one [[triage.tiers]]")
        raw_tiers = []
    for position, entry in enumerate(raw_tiers, start=1):
        where = f"triage tier {position}"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a table")
            continue
        tier_id = entry.get("id")
        if not isinstance(tier_id, str) or not _ID_PATTERN.match(tier_id) or tier_id == CANT_ASSESS:
            errors.append(f"{where}: id {tier_id!r} must be letters, digits or '_' and not {CANT_ASSESS!r} (reserved for the gates)")
            continue
        where = f"triage tier '{tier_id}'"
        label, meaning = entry.get("label"), entry.get("meaning")
        if not isinstance(label, str) or not label.strip() or not isinstance(meaning, str) or not meaning.strip():
            errors.append(f"{where}: needs a label and a meaning")
            continue
        risks = _string_list(entry.get("risks"))
        if not risks or set(risks) - set(RISKS):
            errors.append(f"{where}: risks must be a non-empty list of {', '.join(RISKS)}")
            continue
        floor = entry.get("min_high_risk_probability", 0.0)
        if not _is_number(floor) or not 0.0 <= float(floor) <= 1.0:
            errors.append(f"{where}: min_high_risk_probability {floor!r} is outside [0, 1]")
            floor = 0.0
        reliable = entry.get("requires_reliable", False)
        if not isinstance(reliable, bool):
            errors.append(f"{where}: requires_reliable must be true or false")
            reliable = False
        tiers.append(TierRule(tier_id, label.strip(), " ".join(meaning.split()), tuple(risks), float(floor), reliable,
                              parse_translations(entry.get("translations"), {"label", "meaning"}, where, errors)))
    # An id may have several rules (first match wins), but always the same label.
    labels: dict[str, str] = {}
    for tier in tiers:
        if labels.setdefault(tier.id, tier.label) != tier.label:
            errors.append(f"triage: tier '{tier.id}' has two labels ({labels[tier.id]!r} and {tier.label!r})")
    # A result must always get a headline: an unconditioned tier must cover each risk.
    for risk in RISKS:
        if tiers and not any(risk in tier.risks and tier.min_high_risk_probability == 0 and not tier.requires_reliable for tier in tiers):
            errors.append(f"triage: no tier catches every result of risk {risk!r} (add one without conditions)")
    known_levels = {level.label for level in rules.confidence_levels} | {rules.fallback_confidence}
    advice = _string_list(raw.get("advice_confidence", list(defaults.advice_confidence)))
    if advice is None or set(advice) - known_levels:
        errors.append(f"triage: advice_confidence must list confidence labels of [rules] ({', '.join(sorted(known_levels))})")
        advice = [label for label in defaults.advice_confidence if label in known_levels]
    if rules.fallback_confidence in advice:
        errors.append(f"triage: advice_confidence cannot include the fallback {rules.fallback_confidence!r}: an unclear result never shows advice")
    bands = _string_list(raw.get("skin_tone_caution_bands", []))
    if bands is None or set(bands) - set(SKIN_TONE_BANDS):
        errors.append(f"triage: skin_tone_caution_bands must list ITA bands ({', '.join(SKIN_TONE_BANDS)})")
        bands = []
    texts = {}
    for key in ("cant_assess_label", "cant_assess_meaning", "skin_tone_caution"):
        value = raw.get(key, getattr(defaults, key))
        if not isinstance(value, str):
            errors.append(f"triage: {key} must be a string")
            value = getattr(defaults, key)
        texts[key] = " ".join(value.split())
    if bands and not texts["skin_tone_caution"]:
        errors.append("triage: skin_tone_caution_bands needs a skin_tone_caution text")
    return TriageRules(
        tiers=tuple(tiers),
        advice_confidence=tuple(advice),
        skin_tone_caution_bands=tuple(bands),
        translations=parse_translations(raw.get("translations"), set(texts), "triage", errors),
        **texts,
    )
