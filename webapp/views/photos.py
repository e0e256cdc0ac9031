"""Photo intake, the timeline, and the analysis of photos already in the session."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import unicodedata

from flask import Blueprint, Response, abort, current_app, g, request, session
from flask_babel import gettext as _, ngettext

from .. import lesions as lesion_model
from ..i18n import N_, number, translate
from ..jobs import NotReady, QueueFull, heatmap_overdue, queue_analysis, queue_extra_heatmap
from ..decoding import decoding
from ..images import WORKING_MAX_SIDE, ImageRejected, encode_jpeg, open_clean, plausible_date
from ..render import boxed_photo_jpeg
from ..sessions import current_data, get_store
from ..lesions import LesionError
from ..store import Photo, StoreFull
from ..undo import UndoShelf
from ..local_time import long_date, user_today, user_zone
from .common import render, settings, use_adapter

bp = Blueprint("photos", __name__)

STORED_MAX_SIDE = WORKING_MAX_SIDE  # enough detail for a small lesion, bounded memory per photo (images.py says why)
THUMBNAIL_SIDE = 360


def _photo_or_404(photo_id: str) -> Photo:
    data = current_data()
    photo = data.photos.get(photo_id) if data else None
    if photo is None:
        abort(404, description=_("That photo is not in your session (it may have been deleted, or your session ended)."))
    return photo


# Unicode categories that draw nothing themselves but change what is shown:
# controls (NUL, escape, newlines), format characters (the bidi overrides and
# isolates U+202A-202E and U+2066-2069 that make "gpj.exe" read "exe.jpg",
# zero-width characters), surrogates, private use and unassigned code points.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def display_name(filename: str | None, index: int) -> str:
    """A name for the card: the browser's filename without hidden characters, trimmed.

    Jinja escapes it; reports and exports show it too, so what is stored is
    exactly what a person sees.
    """
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(c) in ("Zl", "Zp") else c for c in name
                   if unicodedata.category(c) not in HIDDEN_CATEGORIES)
    return " ".join(name.split())[:80] or _("Photo %(number)d", number=index)


# Where a photo's date came from: kept in English with the photo, shown translated (the card's |translate).
PHOTO_METADATA, FILE_DATE, UPLOAD_DAY, SET_BY_YOU = N_("photo metadata"), N_("file date"), N_("upload day"), N_("set by you")


def _capture_date(exif_date: dt.date | None, last_modified_ms: str) -> tuple[dt.date, str]:
    """The day the photo was taken, on the user's calendar (their time zone, not the server's)."""
    if exif_date is not None:
        return exif_date, PHOTO_METADATA
    try:
        stamp = int(last_modified_ms) / 1000
        file_date = plausible_date(dt.datetime.fromtimestamp(stamp, tz=user_zone()).date()) if stamp > 0 else None
        if file_date is not None:
            return file_date, FILE_DATE
    except (ValueError, OverflowError, OSError):
        pass
    return user_today(), UPLOAD_DAY


def _duplicate_message(name: str, duplicate: Photo) -> str:
    """Which photo it repeats, so the user can find it (and see it is not lost)."""
    return _("“%(name)s” was skipped: it is the same picture as “%(other)s”, already in this session (%(day)s).",
             name=name, other=duplicate.name, day=long_date(duplicate.taken_on))


@bp.post("/photos")
def upload():
    files = [f for f in request.files.getlist("photos") if f.filename]  # an empty file input sends a nameless part
    if not files:
        abort(400, description=_("No photo was received. Choose, drop, paste or capture a photo."))
    try:
        data = current_data(create=True)
    except StoreFull as exc:
        abort(exc.status, description=exc.message)
    store = get_store()
    last_modified = request.form.get("last_modified", "").split(",")
    max_bytes = current_app.config["MAX_FILE_BYTES"]
    messages: list[tuple[str, str]] = []
    failures: list[int] = []
    added = 0
    for index, upload in enumerate(files):
        name = display_name(upload.filename, len(data.photos) + 1)
        raw = upload.read(max_bytes + 1)
        source_digest = hashlib.sha256(raw).hexdigest()
        try:
            if len(raw) > max_bytes:
                raise ImageRejected(_("It is larger than the %(limit)d MB allowed per photo.", limit=max_bytes // (1024 * 1024)), 413)
            duplicate = store.find_duplicate(data, source_digest)  # the same file again: known before decoding it
            if duplicate is not None:
                messages.append(("info", _duplicate_message(name, duplicate)))
                continue
            with decoding(raw, data, current_app.config["MAX_IMAGE_PIXELS"], STORED_MAX_SIDE) as decoded:
                del raw  # the decoded pixels replace the upload's bytes
                duplicate = store.find_duplicate(data, decoded.digest)  # the same pixels in another file
                if duplicate is not None:
                    messages.append(("info", _duplicate_message(name, duplicate)))
                    continue
                image = decoded.image
                taken_on, source = _capture_date(decoded.taken_on, last_modified[index] if index < len(last_modified) else "")
                photo = Photo(
                    id=secrets.token_urlsafe(9),
                    digest=decoded.digest,
                    source_digest=source_digest,
                    name=name,
                    jpeg=encode_jpeg(image, quality=92, max_side=STORED_MAX_SIDE),
                    thumbnail=encode_jpeg(image, quality=80, max_side=THUMBNAIL_SIDE),
                    width=image.width,
                    height=image.height,
                    taken_on=taken_on,
                    date_source=source,
                )
                del image, decoded
            store.add_photo(data, photo)
        except (ImageRejected, StoreFull) as exc:
            messages.append(("error", _("“%(name)s” was not added: %(reason)s", name=name, reason=translate(exc.message))))
            failures.append(exc.status)
            continue
        finally:
            raw = None
        added += 1
    if added:
        messages.insert(0, ("success", ngettext("Added %(num)d photo.", "Added %(num)d photos.", added)))
    status = 200 if added or not failures else max(set(failures), key=failures.count)
    return render("partials/timeline.html", messages, status)


@bp.get("/photos/<photo_id>/card")
def card(photo_id: str):
    """One card; while queued or running (or computing an extra heatmap) it polls itself, then stops."""
    photo, explaining = _photo_or_404(photo_id), request.args.get("explaining")
    if explaining and explaining not in photo.extra_heatmaps and heatmap_overdue(current_data(), photo, explaining):
        explaining = None  # its worker never came back: stop polling; the button to ask again shows again
    return render("partials/card.html", photo=photo, explaining=explaining)


def _undo_shelf() -> UndoShelf:
    return current_app.extensions["privascan_undo"]


@bp.record_once
def _install_undo_shelf(state) -> None:
    state.app.extensions["privascan_undo"] = UndoShelf()


@bp.before_app_request
def _sweep_undo_shelf() -> None:
    _undo_shelf().sweep()  # a deleted photo never outlives its undo window by more than a request


@bp.post("/photos/<photo_id>/delete")
def delete(photo_id: str):
    photo = _photo_or_404(photo_id)
    data = current_data()
    lesion = lesion_model.lesion_of(data, photo.id)
    shelf = _undo_shelf()
    shelf.put(data.id, photo, lesion.id if lesion else None)
    get_store().remove_photo(data, photo.id)
    message = _("Deleted “%(name)s”. Undo is possible for %(seconds)s seconds; after that nothing of it is left on the "
                "server.", name=photo.name, seconds=number(shelf.seconds))
    return render("partials/timeline.html", [("info", message, "partials/undo_delete.html")], undo_photo=photo,
                  undo_seconds=shelf.seconds)


@bp.post("/photos/undo-delete")
def undo_delete():
    data = current_data()
    item = _undo_shelf().take(data.id, request.form.get("photo_id", "")) if data is not None else None
    if item is None:
        abort(410, description=_("That photo can no longer be brought back: the undo time is over "
                                 "(or it was replaced by a later delete). Add the photo again if you need it."))
    photo = item.photo
    if photo.state in ("queued", "running"):  # its job was dropped with it
        photo.state, photo.stage = "new", ""
    try:
        get_store().add_photo(data, photo)
    except StoreFull as exc:
        abort(exc.status, description=_("“%(name)s” could not be brought back: %(reason)s", name=photo.name, reason=translate(exc.message)))
    message = _("“%(name)s” is back.", name=photo.name)
    if item.lesion_id:
        try:
            lesion = lesion_model.add_to_lesion(get_store(), data, item.lesion_id, photo.id)
            message = _("“%(name)s” is back. It is back in “%(lesion)s”.", name=photo.name, lesion=lesion.name)
        except LesionError:
            message = _("“%(name)s” is back. Its lesion no longer exists, so it is on its own.", name=photo.name)
    return render("partials/timeline.html", [("success", message)], undo_photo=None)


@bp.post("/photos/<photo_id>/date")
def change_date(photo_id: str):
    photo = _photo_or_404(photo_id)
    sent = request.form.get("taken_on", "").strip()
    if not sent:
        abort(400, description=_("“%(name)s”: the date taken was empty, so it was not changed. Please enter a date.", name=photo.name))
    try:
        new_date = dt.date.fromisoformat(sent)
    except ValueError:
        abort(400, description=_("“%(name)s”: please enter the date taken as year-month-day.", name=photo.name))
    # The user's today, in their time zone: past midnight there, it is already tomorrow on the server's UTC.
    if new_date > user_today() or new_date.year < 1900:
        abort(400, description=_("“%(name)s”: %(day)s is in the future or too far in the past.", name=photo.name,
                                 day=long_date(new_date)))
    data = current_data()
    get_store().update_photo(data.id, photo.id, secret=data.secret, taken_on=new_date, date_source=SET_BY_YOU)
    photo.taken_on, photo.date_source = new_date, SET_BY_YOU  # this request's copy (the Redis store's is separate)
    return render("partials/timeline.html", [("info", _("Moved “%(name)s” to %(day)s.", name=photo.name, day=long_date(new_date)))])


@bp.post("/session/clear")
def clear():
    data = current_data()
    if data is not None:
        get_store().delete(data.id)
        _undo_shelf().drop(data.id)
    session.pop("store_id", None)
    session.pop("started", None)
    # A new cookie value too: the old one, replayed, now finds nothing at all.
    current_app.session_interface.regenerate(session)
    g.store_data = None
    return render("partials/timeline.html", [("success", _("Everything in this session was deleted from the server."))])


@bp.post("/photos/<photo_id>/analyze")
def analyse(photo_id: str):
    """Queue the photo; with ``analyse_anyway`` the model runs although the quality gate failed (low quality)."""
    photo = _photo_or_404(photo_id)
    anyway = request.form.get("analyse_anyway") == "1"
    try:
        queue_analysis(current_data(), photo, settings(), analyse_anyway=anyway)
    except NotReady as exc:
        abort(409, description=exc.message)
    except QueueFull as exc:
        abort(503, description=exc.message)
    return render("partials/card.html", photo=photo)


@bp.post("/analyze-all")
def analyse_all():
    data = current_data()
    waiting = [p for p in data.photos.values() if p.state in ("new", "error")] if data else []
    if not waiting:
        return render("partials/timeline.html", [("info", _("There is no photo waiting to be analysed."))])
    queued = 0
    try:
        for photo in waiting:
            queue_analysis(data, photo, settings())
            queued += 1
    except NotReady as exc:
        abort(409, description=exc.message)
    except (QueueFull, StoreFull) as exc:
        if not queued:
            abort(getattr(exc, "status", 503), description=exc.message)
        return render("partials/timeline.html", [("info", ngettext("Queued %(num)d photo; %(reason)s", "Queued %(num)d photos; %(reason)s",
                                                                   queued, reason=translate(exc.message)))])
    return render("partials/timeline.html", [("success", ngettext("Queued %(num)d photo for analysis.",
                                                                  "Queued %(num)d photos for analysis.", queued))])


@bp.post("/photos/<photo_id>/explain/<condition_id>")
def explain(photo_id: str, condition_id: str):
    """A second heatmap (e.g. for the runner-up) on the same crop."""
    photo = _photo_or_404(photo_id)
    scores = photo.result.scores_for(use_adapter()) if photo.result is not None and photo.result.analysed else None
    if scores is None or condition_id not in scores.condition_ids:
        abort(404, description=_("That condition is not part of this photo's result."))
    try:
        queue_extra_heatmap(current_data(), photo, settings(), condition_id)
    except NotReady as exc:
        abort(409, description=exc.message)
    except QueueFull as exc:
        abort(503, description=exc.message)
    return render("partials/card.html", photo=photo, explaining=condition_id)


@bp.post("/photos/<photo_id>/explain")
def explain_chosen(photo_id: str):
    """The same, for a condition picked from the list under the ranking."""
    return explain(photo_id, request.form.get("condition_id", ""))


# -- pictures (all from memory, never cached by the browser) ------------------
def _image_response(data: bytes, mimetype: str) -> Response:
    if not data:
        abort(404, description=_("That picture is not available."))
    return Response(data, mimetype=mimetype)


@bp.get("/photos/<photo_id>/thumbnail.jpg")
def thumbnail(photo_id: str):
    return _image_response(_photo_or_404(photo_id).thumbnail, "image/jpeg")


@bp.get("/photos/<photo_id>/photo.jpg")
def full_photo(photo_id: str):
    return _image_response(_photo_or_404(photo_id).jpeg, "image/jpeg")


# Each analysis's pictures also have URLs of their own (its version in the
# path): the pages use those, so after "Analyze again" the browser can never
# show the previous run's cached crop or heatmap beside the new text. A
# version that is not the photo's current result's is a 404, never a stale
# picture. The unversioned URLs always give the current result's pictures.
def _result_of_version(photo_id: str, version: str):
    result = _photo_or_404(photo_id).result
    if result is None or result.version != version:
        abort(404, description=_("That picture belongs to an earlier analysis of this photo."))
    return result


@bp.get("/photos/<photo_id>/r/<version>/crop.jpg")
def crop_version(photo_id: str, version: str):
    return _image_response(_result_of_version(photo_id, version).crop_jpeg, "image/jpeg")


@bp.get("/photos/<photo_id>/r/<version>/heatmap.png")
def heatmap_version(photo_id: str, version: str):
    return _image_response(_result_of_version(photo_id, version).heatmap_png, "image/png")


@bp.get("/photos/<photo_id>/r/<version>/heatmap/<condition_id>.png")
def extra_heatmap_version(photo_id: str, version: str, condition_id: str):
    _result_of_version(photo_id, version)
    return _image_response(_photo_or_404(photo_id).extra_heatmaps.get(condition_id, b""), "image/png")


@bp.get("/photos/<photo_id>/r/<version>/located.jpg")
def located_version(photo_id: str, version: str):
    _result_of_version(photo_id, version)
    return located(photo_id)


@bp.get("/photos/<photo_id>/crop.jpg")
def crop(photo_id: str):
    result = _photo_or_404(photo_id).result
    return _image_response(result.crop_jpeg if result else b"", "image/jpeg")


@bp.get("/photos/<photo_id>/heatmap.png")
def heatmap(photo_id: str):
    result = _photo_or_404(photo_id).result
    return _image_response(result.heatmap_png if result else b"", "image/png")


@bp.get("/photos/<photo_id>/heatmap/<condition_id>.png")
def extra_heatmap(photo_id: str, condition_id: str):
    return _image_response(_photo_or_404(photo_id).extra_heatmaps.get(condition_id, b""), "image/png")


@bp.get("/photos/<photo_id>/located.jpg")
def located(photo_id: str):
    """The photo with the detector's box and the crop region drawn on it."""
    photo = _photo_or_404(photo_id)
    result = photo.result
    if result is None:
        abort(404, description=_("This photo has not been analysed yet."))
    box = result.detection.box if result.detection else None
    return _image_response(boxed_photo_jpeg(open_clean(photo.jpeg), box, result.crop_region), "image/jpeg")
