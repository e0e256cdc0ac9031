"""What every view needs: the session's settings, the clinical app, and one way to render.

One template serves both the full page and the HTMX swap (Hypermedia
Systems style): a view renders the partial for an HTMX request and the whole
page otherwise, so a reload or a shared link shows the same state. (Adding
photos by drag and drop, paste or camera needs the page's JavaScript; the
file picker and every button are plain forms.)
"""

from __future__ import annotations

import dataclasses
import time
from itertools import groupby

from flask import current_app, g, render_template, request, session

from ..bank_i18n import localized_app, shown_bank
from ..interfaces import ClinicalApp, PromptBank
from ..jobs import clinical_app_for, queue_position, queue_positions, settle_overdue
from ..live import effective_thresholds
from ..local_time import user_today
from ..pipeline import read
from ..sessions import current_data


def settings() -> dict:
    return session.get("settings", {})


def clinical_app() -> ClinicalApp:
    """The clinical app (modality) this session chose, else the server's default, in the request's language."""
    return localized_app(clinical_app_for(settings()))


def clinical_app_by_name(name: str) -> ClinicalApp:
    return localized_app(current_app.extensions["privascan_registry"].app(name))


def bank_for(chosen: ClinicalApp) -> PromptBank:
    """The modality's bank, its words in the request's language (webapp/bank_i18n.py)."""
    return shown_bank(current_app.extensions["privascan_registry"].banks[chosen.bank])


def bank_by_name(name: str) -> PromptBank:
    return shown_bank(current_app.extensions["privascan_registry"].banks[name])


def rules_for(bank: PromptBank):
    """The bank's rules with this session's debug-panel overrides applied."""
    overrides = settings().get("rules", {})
    return dataclasses.replace(bank.rules, **overrides) if overrides else bank.rules


def timeline_groups():
    """Photos grouped by capture date, newest day first, in upload order within a day."""
    data = current_data()
    photos = list(data.photos.values()) if data else []
    photos.sort(key=lambda p: p.added_at)
    photos.sort(key=lambda p: p.taken_on, reverse=True)  # stable: upload order kept within a day
    return [(day, list(items)) for day, items in groupby(photos, key=lambda p: p.taken_on)]


def waiting_photos() -> list:
    """This session's photos that are queued or being analysed (their cards poll)."""
    data = current_data()
    return [p for p in data.photos.values() if p.state in ("queued", "running")] if data else []


def queue_place(photo_id: str) -> int | None:
    """A queued photo's place, from one reading of the queue per response: the cards side by side never
    show two photos at the same place (each read on its own did, as the queue moved between reads)."""
    if "queue_places" not in g:
        data = current_data()
        queued = [p.id for p in waiting_photos() if p.state == "queued"]
        g.queue_places = queue_positions(data.id, queued) if data is not None and queued else {}
    return g.queue_places.get(photo_id)


def session_timing() -> dict:
    """What the page's session timer needs: the idle limit, and the absolute end (epoch seconds; 0 before the session holds data)."""
    config = current_app.config
    started = session.get("started") if current_data() is not None else None
    return {
        "idle_seconds": int(config["SESSION_IDLE_MINUTES"] * 60),
        "ends_at": int(started + config["SESSION_LIFETIME_HOURS"] * 3600) if started else 0,
    }


def use_adapter() -> bool:
    """Whether this session reads results through the clinic's adapter (the debug panel can switch it off)."""
    return not settings().get("adapter_off")


def adapter_for(bank: PromptBank):
    """The clinic's adapter installed for this bank, or None."""
    return current_app.extensions["privascan_registry"].adapters.get(bank.name)


def read_result(result):
    """The interpretation of a stored result under this session's rules (and adapter switch)."""
    bank = bank_for(current_app.extensions["privascan_registry"].app(result.app_name))
    return read(result, bank, rules_for(bank), use_adapter())


def page_context() -> dict:
    chosen = clinical_app()
    models = current_app.extensions["privascan_models"]
    registry = current_app.extensions["privascan_registry"]
    data = current_data()
    settle_overdue(data)  # before anything shows a photo's state: none is "running" past its deadline
    return {
        "photo_store_id": data.id if data else None,
        "clinical_app_by_name": clinical_app_by_name,
        "bank_by_name": bank_by_name,
        "read_result": read_result,
        "rules_for": rules_for,
        "use_adapter": use_adapter(),
        "adapter_for": adapter_for,
        "effective_thresholds": effective_thresholds,
        "threshold_overrides": settings().get("thresholds"),
        "queue_position": queue_position,
        "queue_place": queue_place,
        "clinical_app": chosen,
        "bank": bank_for(chosen),
        "apps": [localized_app(each) for each in registry.apps.values()],
        "settings": settings(),
        "model_status": models.status(chosen.classifier),
        "groups": timeline_groups(),
        "today": user_today(),
        "waiting_photos": waiting_photos,
        # When a response was rendered (wall-clock microseconds, comparable across replicas): the page
        # drops a card's state line older than the one it shows (static/focus.js), since polls may cross.
        "snapshot_seq": lambda: time.time_ns() // 1000,
        "demo": current_app.config["DEMO_MODEL"],
        "debug": "debug" in request.args,
        "session_ended": g.get("session_ended", False),
    }


def render(partial: str, messages: list[tuple[str, str]] | None = None, status: int = 200, **extra):
    """Render ``partial`` (plus messages out of band) for HTMX, or the whole page."""
    context = {**page_context(), "messages": messages or [], **extra}
    if request.headers.get("HX-Request"):
        return render_template(partial, oob_messages=True, **context), status
    return render_template("index.html", **context), status
