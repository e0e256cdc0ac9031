"""The one page, the model status line, and the session's settings."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, request, session
from flask_babel import gettext as _

from ..i18n import number

from .common import bank_for, render, settings

bp = Blueprint("pages", __name__)


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
    if request.form.get("reset_debug"):
        new.pop("rules", None)
        new.pop("thresholds", None)
        new.pop("adapter_off", None)
    session["settings"] = new
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

