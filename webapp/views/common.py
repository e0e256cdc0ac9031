"""What every view needs: the session's settings, the clinical app, and one way to render.

One template serves both the full page and the HTMX swap (Hypermedia
Systems style): a view renders the partial for an HTMX request and the whole
page otherwise, so every interaction also works without JavaScript.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from itertools import groupby

from flask import current_app, g, render_template, request, session

from ..interfaces import ClinicalApp, PromptBank
from ..analysis import clinical_app_for
from ..pipeline import read
from ..sessions import current_data


def settings() -> dict:
    return session.get("settings", {})


def clinical_app() -> ClinicalApp:
    return clinical_app_for(settings())


def bank_for(record: ClinicalApp) -> PromptBank:
    return current_app.extensions["privascan_registry"].banks[record.bank]


def rules_for(bank: PromptBank):
    """The bank's rules with this session's debug-panel overrides applied."""
    overrides = settings().get("rules", {})
    return dataclasses.replace(bank.rules, **overrides) if overrides else bank.rules


def thresholds_for(bank: PromptBank) -> dict[str, float]:
    overrides = settings().get("thresholds", {})
    return {c.id: overrides.get(c.id, c.alert_threshold) for c in bank.conditions}


def timeline_groups():
    """Photos grouped by capture date, newest day first, in upload order within a day."""
    data = current_data()
    photos = list(data.photos.values()) if data else []
    photos.sort(key=lambda p: p.added_at)
    photos.sort(key=lambda p: p.taken_on, reverse=True)  # stable: upload order kept within a day
    return [(day, list(items)) for day, items in groupby(photos, key=lambda p: p.taken_on)]


def read_result(result):
    """The interpretation of a stored result under this session's rules."""
    bank = bank_for(current_app.extensions["privascan_registry"].app(result.app_name))
    return read(result, bank, rules_for(bank))


def page_context() -> dict:
    record = clinical_app()
    models = current_app.extensions["privascan_models"]
    registry = current_app.extensions["privascan_registry"]
    data = current_data()
    return {
        "photo_store_id": data.id if data else None,
        "clinical_app_by_name": registry.app,
        "bank_by_name": registry.banks.__getitem__,
        "read_result": read_result,
        "rules_for": rules_for,
        "thresholds_for": thresholds_for,
        "record": record,
        "bank": bank_for(record),
        "apps": list(registry.apps.values()),
        "settings": settings(),
        "model_status": models.status(record.classifier),
        "groups": timeline_groups(),
        "today": dt.date.today(),
        "demo": current_app.config["DEMO_MODEL"],
        "debug": "debug" in request.args,
        "worker": current_app.extensions["privascan_worker"],
        "session_ended": g.get("session_ended", False),
    }


def render(partial: str, messages: list[tuple[str, str]] | None = None, status: int = 200, **extra):
    """Render ``partial`` (plus messages out of band) for HTMX, or the whole page."""
    context = {**page_context(), "messages": messages or [], **extra}
    if request.headers.get("HX-Request"):
        return render_template(partial, oob_messages=True, **context), status
    return render_template("index.html", **context), status
