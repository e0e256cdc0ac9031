"""A prompt bank's words in another language, from the translations the bank itself carries.

A bank is data, so its translations are data too: each condition, template
set, tier and the triage texts may hold ``[... .translations.<code>]`` tables
(prompts/dermatology.toml shows them). ``localized_bank`` returns a copy of
the bank whose labels, summaries and tier texts are in that language; what
the model reads (descriptions, templates, scope prompts) and every id, code,
threshold and hash stay exactly as they are, so a localized bank interprets
stored scores the same way and is never a different bank to the classifier.
Anything a translation leaves out stays in English.

Clinical apps' words (title, subject, disclaimer) are the plugin's Python
strings: they go through the gettext catalogue (``localized_app``).
"""

from __future__ import annotations

import dataclasses
import threading

from flask_babel import gettext

from .i18n import current_language
from .interfaces import ClinicalApp, PromptBank

_cache: dict[tuple[int, str], tuple[PromptBank, PromptBank]] = {}
_lock = threading.Lock()


def _words(entry: dict, code: str) -> dict:
    return entry.get(code, {}) if entry else {}


def localized_bank(bank: PromptBank, code: str) -> PromptBank:
    """``bank`` with its words in language ``code`` (the bank itself for English or no translation)."""
    if code == bank.language or code == "en":
        return bank
    key = (id(bank), code)
    cached = _cache.get(key)
    if cached is not None and cached[0] is bank:
        return cached[1]
    localized = _localize(bank, code)
    with _lock:
        _cache[key] = (bank, localized)  # the original is held too, so its id cannot be reused meanwhile
    return localized


def _localize(bank: PromptBank, code: str) -> PromptBank:
    conditions = tuple(
        dataclasses.replace(condition, **_words(condition.translations, code)) for condition in bank.conditions
    )
    template_sets = tuple(
        dataclasses.replace(template_set, **_words(template_set.translations, code)) for template_set in bank.template_sets
    )
    rules = bank.rules
    labels = _words(rules.translations, code)
    if labels:
        # Confidence labels are compared with the triage's advice_confidence: both are translated alike.
        rules = dataclasses.replace(
            rules,
            confidence_levels=tuple(
                dataclasses.replace(level, label=labels.get(level.label, level.label)) for level in rules.confidence_levels
            ),
            fallback_confidence=labels.get(rules.fallback_confidence, rules.fallback_confidence),
        )
    triage = bank.triage
    triage = dataclasses.replace(
        triage,
        tiers=tuple(dataclasses.replace(tier, **_words(tier.translations, code)) for tier in triage.tiers),
        advice_confidence=tuple(labels.get(label, label) for label in triage.advice_confidence),
        **_words(triage.translations, code),
    )
    scope = dataclasses.replace(bank.scope, **_words(bank.scope.translations, code))
    return dataclasses.replace(
        bank,
        conditions=conditions,
        template_sets=template_sets,
        rules=rules,
        triage=triage,
        scope=scope,
        language=code,
        **_words(bank.translations, code),
    )


def localized_app(clinical_app: ClinicalApp) -> ClinicalApp:
    """A clinical app's title, subject and disclaimer through the catalogue (plugins mark them with N_)."""
    if current_language() == "en":
        return clinical_app
    return dataclasses.replace(
        clinical_app,
        **{name: gettext(getattr(clinical_app, name)) for name in ("title", "subject", "disclaimer") if getattr(clinical_app, name)},
    )


def shown_bank(bank: PromptBank) -> PromptBank:
    """``bank`` in the request's language."""
    return localized_bank(bank, current_language())
