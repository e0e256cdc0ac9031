"""Grouping photos as one lesion (HTMX, every control a plain form too), and a lesion's comparison page."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask_babel import gettext as _

from .. import lesions as lesion_model
from ..lesions import LesionError
from ..sessions import current_data, get_store
from .common import page_context, render
from .results import comparison, similarity_threshold

bp = Blueprint("lesions", __name__)


def _data():
    data = current_data()
    if data is None:
        abort(404, description=_("Your session has no photos (it may have ended). Add a photo first."))
    return data


def _fail(exc: LesionError):
    abort(exc.status, description=exc.message)


@bp.post("/photos/<photo_id>/lesion")
def group(photo_id: str):
    """Put a photo in an existing lesion (``lesion`` = its id) or in a new one (``lesion`` = "new")."""
    data, store = _data(), get_store()
    target = request.form.get("lesion", "new")
    try:
        if target == "new":
            lesion = lesion_model.new_lesion(store, data, [photo_id], request.form.get("name"), request.form.get("site"))
            message = _("Started the lesion “%(name)s”.", name=lesion.name)
        else:
            lesion = lesion_model.add_to_lesion(store, data, target, photo_id)
            message = _("Added the photo to “%(name)s”.", name=lesion.name)
    except LesionError as exc:
        _fail(exc)
    return render("partials/timeline.html", [("success", message)])


@bp.post("/photos/<photo_id>/lesion/suggestion")
def answer_suggestion(photo_id: str):
    """Yes or no to "same lesion as ...?"; the suggestion is recomputed here, never taken from the form."""
    data, store = _data(), get_store()
    photo = data.photos.get(photo_id)
    if photo is None:
        abort(404, description=_("That photo is not in your session (it may have been deleted, or your session ended)."))
    suggestion = lesion_model.suggest(data, photo, similarity_threshold())
    if suggestion is None or suggestion.key != request.form.get("key"):
        abort(409, description=_("That suggestion no longer applies (the photos or lesions changed). Please look again."))
    try:
        if request.form.get("answer") == "yes":
            if suggestion.lesion_id:
                lesion = lesion_model.add_to_lesion(store, data, suggestion.lesion_id, photo_id)
            else:
                lesion = lesion_model.new_lesion(store, data, [suggestion.other_photo_id, photo_id])
            message = ("success", _("Grouped as “%(name)s”. Give it a name and body site below if you like.", name=lesion.name))
        else:
            lesion_model.decline(store, data, photo_id, suggestion.key)
            message = ("info", _("Noted: not the same lesion. PrivaScan will not suggest it again for this photo."))
    except LesionError as exc:
        _fail(exc)
    return render("partials/timeline.html", [message])


@bp.post("/photos/<photo_id>/ungroup")
def ungroup(photo_id: str):
    data, store = _data(), get_store()
    try:
        lesion = lesion_model.ungroup(store, data, photo_id)
    except LesionError as exc:
        _fail(exc)
    gone = lesion.id not in data.lesions
    message = (_("Took the photo out of “%(name)s”. That lesion had no other photo, so it is gone.", name=lesion.name) if gone
               else _("Took the photo out of “%(name)s”.", name=lesion.name))
    return render("partials/timeline.html", [("info", message)])


@bp.post("/lesions/<lesion_id>")
def update(lesion_id: str):
    data, store = _data(), get_store()
    try:
        lesion = lesion_model.update_lesion(store, data, lesion_id, request.form.get("name"), request.form.get("site"))
    except LesionError as exc:
        _fail(exc)
    if request.form.get("from") == "comparison":
        return comparison_page(lesion_id, messages=[("success", _("Saved “%(name)s”.", name=lesion.name))])
    return render("partials/timeline.html", [("success", _("Saved “%(name)s”.", name=lesion.name))])


@bp.get("/lesions/<lesion_id>")
def comparison_page(lesion_id: str, messages=None):
    """A lesion's photos side by side in date order, with the change between consecutive photos."""
    data = _data()
    try:
        lesion = lesion_model.get_lesion(data, lesion_id)
    except LesionError as exc:
        _fail(exc)
    return render_template("lesion.html", **page_context(), messages=messages or [], lesion=lesion,
                           columns=comparison(data, lesion))
