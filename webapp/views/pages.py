"""The one page, the model status line, and the session's settings."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, request, session
from flask_babel import gettext as _

from ..i18n import number

from ..sessions import current_data
from .common import bank_for, render, session_timing, settings

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def _session_timing() -> dict:
    """Every page's session timer (static/session_timer.js): warn before the session ends, offer to extend it."""
    return {"session_timing": session_timing()}


@bp.get("/")
def index():
    messages = []
    if g.get("session_ended"):
        messages.append(("info", _("Your previous session ended, and its photos were deleted. This is a fresh session.")))
    return render("index.html", messages)


@bp.get("/status")
def status():
    """The model status line; it polls itself while the model loads.

    Once loading has settled, the timeline comes along out of band so its
    Analyze buttons enable (or explain why not) without a reload.
    """
    return render("partials/status_update.html")


@bp.post("/session/extend")
def extend_session():
    """Keep the session: loading it (before this view) already counted as activity, so the idle clock restarts."""
    if current_data() is None:
        abort(410, description=_("Your session had already ended, and its photos were deleted. This is a fresh session."))
    return "", 204


@bp.post("/settings")
def update_settings():
    """Modality, picture kind, and the debug panel's rules and thresholds."""
    registry = current_app.extensions["privascan_registry"]
    new = dict(settings())
    app_name = request.form.get("app")
    switched = False
    if app_name:
        if app_name not in registry.apps:
            abort(400, description=_("That modality is not available."))
        if app_name != new.get("app"):
            new.pop("template_set", None)
            new.pop("thresholds", None)
            switched = True
        new["app"] = app_name
    bank = bank_for(registry.app(new.get("app") or current_app.config["CLINICAL_APP"]))
    template_set = request.form.get("template_set")
    if template_set:
        if template_set in {t.id for t in bank.template_sets}:
            new["template_set"] = template_set
        elif not switched:
            abort(400, description=_("That kind of picture is not available for this modality."))
        # else: the picker's form also sent the previous modality's kind of
        # picture; the new modality starts with its own first one.
    if request.form.get("reset_thresholds"):
        new.pop("thresholds", None)
        session["settings"] = new
        return render("partials/workspace.html", [("info", _("Alert thresholds reset to the bank's values."))])
    if request.form.get("reset_debug"):
        # Reset first: the other fields of the form may hold the very values being thrown away.
        for key in ("rules", "thresholds", "adapter_off"):
            new.pop(key, None)
        session["settings"] = new
        return render("partials/workspace.html", [("info", _("Calibration and alert thresholds reset to the bank's values."))])
    rules = dict(new.get("rules", {}))
    for field, label, high in (("unclear_margin", _("“Not clear” margin"), 1.0), ("entropy_limit_bits", _("Entropy limit"), 10.0)):
        if field in request.form:
            rules[field] = _number(request.form[field], label, 0.0, high)
    if rules:
        new["rules"] = rules
    thresholds = dict(new.get("thresholds", {}))
    for condition in bank.conditions:
        key = f"threshold_{condition.id}"
        if key in request.form:
            thresholds[condition.id] = _number(request.form[key], condition.label, 0.0, 1.0)
    if thresholds:
        new["thresholds"] = thresholds
    if "adapter_switch" in request.form:  # the debug panel's form (an unticked box sends nothing)
        if request.form.get("use_adapter"):
            new.pop("adapter_off", None)
        else:
            new["adapter_off"] = True
    session["settings"] = new
    if request.args.get("part") == "timeline" and not switched:
        # Only the kind of picture changed: the settings stay as they are (the
        # select keeps focus, arrow keys step on), the cards say what Analyze will use.
        label = bank.template_set(new.get("template_set")).label
        return render("partials/timeline.html", [("info", _("Settings saved. New analyses use “%(kind)s”.", kind=label))])
    return render("partials/workspace.html", [("info", _("Settings saved."))])


def _number(text: str, what: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        abort(400, description=_("%(what)s: please enter a number.", what=what))
    if not low <= value <= high:
        abort(400, description=_("%(what)s: please enter a number between %(low)s and %(high)s.", what=what,
                                 low=number(low), high=number(high)))
    return value

