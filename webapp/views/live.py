"""Live scan: camera frames in, smoothed per-condition alerts out.

A frame is decoded in memory, analysed on the inference worker (localizer and
classifier, no heatmap) and dropped; only its scores move the session's
smoothing (``webapp.live``), and only its crop is kept, replacing the last
one, for "explain this frame". One frame per session is in flight at a time:
a second one is refused with 429, never queued. Alerts go to the session's
log, to the page (and its speech), and to any ``alert_raised`` plugin.
"""

from __future__ import annotations

import base64
import json
import logging
import time

from flask import Blueprint, Response, abort, current_app, render_template, request, session
from flask_babel import gettext as _

from ..decoding import decoding
from ..i18n import N_, significant, translate
from ..images import ImageRejected
from ..jobs import NotReady, QueueFull, WorkerTimeout, analyse_live_frame, explain_live_crop, ready_clinical_app
from ..local_time import user_now, user_zone, zone_label
from ..live import LiveState, Smoothing, effective_thresholds, frame_rows, frame_timings, log_csv, log_json
from ..sessions import current_data, get_store
from ..store import StoreFull
from .common import bank_for, clinical_app, settings

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__, url_prefix="/live")

ENDED = N_("This live scan has ended (the session ended or was cleared, or the scan was never started), "
           "so the frame was not analysed. Press Start to begin again.")


def _smoothing() -> Smoothing:
    config = current_app.config
    return Smoothing(window=int(config["LIVE_WINDOW"]), needed=int(config["LIVE_NEEDED"]), gap=float(config["LIVE_GAP"]))


def _thresholds(bank) -> dict[str, float]:
    return effective_thresholds(bank, settings().get("thresholds"))


def _live() -> LiveState | None:
    """This session's live state, if a scan was started for the current modality."""
    data = current_data()
    live = data.live if data is not None else None
    return live if live is not None and live.app_name == clinical_app().name else None


def _context(**extra) -> dict:
    chosen = clinical_app()
    bank = bank_for(chosen)
    live = _live()
    return {
        "clinical_app": chosen,
        "bank": bank,
        "thresholds": _thresholds(bank),
        "smoothing": _smoothing(),
        "live": live,
        # Alerts shown in the page's words, whatever language raised them.
        "log_alerts": [alert.worded_by(bank) for alert in live.log_snapshot()] if live else [],
        "log_limit": int(current_app.config["LIVE_LOG_LIMIT"]),
        "current_alerts": [alert.worded_by(bank) for alert in live.current_alerts()] if live else [],
        "model_status": current_app.extensions["privascan_models"].status(chosen.classifier),
        "demo": current_app.config["DEMO_MODEL"],
        "frame": None,
        "raised": [],
        "messages": [],
        **extra,
    }


def _render(partial_name: str, messages: list[tuple[str, str]] | None = None, **extra):
    """The partial (with messages out of band) for HTMX, the whole live page otherwise."""
    context = _context(messages=messages or [], **extra)
    if request.headers.get("HX-Request"):
        return render_template(partial_name, oob_messages=True, **context)
    return render_template("live.html", **context)


@bp.get("")
def page():
    if request.headers.get("HX-Request"):
        return render_template("partials/live_panel.html", **_context())
    return render_template("live.html", **_context())


@bp.post("/start")
def start():
    """Begin (or restart) this session's live scan; the session is created here if need be."""
    try:
        chosen = ready_clinical_app(settings())
    except NotReady as exc:
        abort(409, description=exc.live_message)
    try:
        data = current_data(create=True)
    except StoreFull as exc:
        abort(exc.status, description=exc.message)
    live = data.live
    if live is None or live.app_name != chosen.name:
        data.live = LiveState(chosen.name, _smoothing(), log_limit=int(current_app.config["LIVE_LOG_LIMIT"]))
    else:
        live.restart()
    get_store().save_live(data)  # scale-out mode keeps it in Redis for every replica
    return render_template("partials/live_frame.html", **_context())


@bp.post("/frame")
def frame():
    """One downscaled JPEG frame (multipart field ``frame``) in, the live result partial out."""
    data = current_data()
    live = _live()
    if live is None:
        abort(410, description=_(ENDED))
    upload = request.files.get("frame")
    if upload is None:
        abort(400, description=_("No frame was received: send one camera frame as a JPEG in the field 'frame'."))
    if not live.frame_lock.acquire(blocking=False):
        abort(429, description=_("The previous frame is still being analysed, so this one was dropped. "
                                 "Send the next frame when the previous answer has arrived."))
    try:
        received = time.perf_counter()
        max_bytes = int(current_app.config["LIVE_MAX_FRAME_BYTES"])
        raw = upload.read(max_bytes + 1)
        if len(raw) > max_bytes:
            abort(413, description=_("This frame is larger than the %(limit)d MB allowed for live frames. Send frames of "
                                     "at most 640 pixels per side.", limit=max_bytes // (1024 * 1024)))
        try:
            with decoding(raw, data, int(current_app.config["LIVE_MAX_FRAME_PIXELS"])) as decoded:
                image = decoded.image
                del decoded
        except (ImageRejected, StoreFull) as exc:
            abort(exc.status, description=_("This frame was not analysed: %(reason)s", reason=translate(exc.message)))
        finally:
            del raw
        decoded = time.perf_counter()
        try:
            chosen, analysis = analyse_live_frame(image, settings(), float(current_app.config["LIVE_FRAME_TIMEOUT"]))
        except NotReady as exc:
            abort(409, description=exc.message)
        except (QueueFull, WorkerTimeout) as exc:
            abort(503, description=exc.message)
        finally:
            del image  # the frame itself is gone once it has been analysed
        if not get_store().live_is_current(data, live):  # the session was cleared while the frame was analysed
            abort(410, description=_(ENDED))
        bank = bank_for(chosen)
        thresholds = _thresholds(bank)
        probabilities, view, reasons = analysis.probabilities, analysis.view, analysis.reasons
        raised = live.observe(probabilities, bank, thresholds)
        live.keep_crop(analysis.crop_jpeg, analysis.result.template_set_id)
        get_store().save_live(data)  # scale-out mode: the next frame may reach another replica
        seconds = {"decode": decoded - received, "waiting": analysis.started - decoded, **analysis.result.timings}
        del analysis
        for alert in raised:
            _hand_off(alert)
        seconds["server"] = time.perf_counter() - received
        frame_info = {"view": view, "reasons": reasons, "rows": frame_rows(live, bank, probabilities, thresholds),
                      "timings": frame_timings(seconds), "number": live.frames}
        return render_template("partials/live_frame.html",
                               **_context(frame=frame_info, raised=[alert.worded_by(bank) for alert in raised]))
    finally:
        live.frame_lock.release()


def _hand_off(alert) -> None:
    """Give the alert (and nothing else) to ``alert_raised`` plugins; none is installed by default."""
    try:
        current_app.extensions["privascan_plugins"].hook.alert_raised(alert=alert, config=current_app.config)
    except Exception as exc:  # a broken plugin must not break the scan; no alert content is logged
        log.error("an alert_raised plugin failed (%s); the alert stays in the session's log", type(exc).__name__)


@bp.post("/thresholds")
def thresholds():
    """Per-condition alert thresholds for this session (shared with the debug panel's)."""
    bank = bank_for(clinical_app())
    new = dict(settings())
    chosen = dict(new.get("thresholds", {}))
    if request.form.get("reset"):
        chosen = {}
        message = _("Alert thresholds reset to the bank's values.")
    else:
        current = _thresholds(bank)
        changed = []
        for condition in bank.conditions:
            key = f"threshold_{condition.id}"
            if key in request.form:
                chosen[condition.id] = _threshold(request.form[key], condition.label, current[condition.id])
                if abs(chosen[condition.id] - current[condition.id]) > 1e-12:
                    value = chosen[condition.id]
                    changed.append(f"{condition.label} {significant(value, 6)} ({significant(100 * value, 6)} %)")
        message = (_("Alert thresholds saved for this session: %(changes)s.", changes=", ".join(changed)) if changed
                   else _("Alert thresholds saved for this session."))
    if chosen:
        new["thresholds"] = chosen
    else:
        new.pop("thresholds", None)
    session["settings"] = new
    return _render("partials/live_thresholds.html", [("success", message)], thresholds_open=True)


def _threshold(text: str, label: str, current: float) -> float:
    kept = _("Nothing was saved; it stays %(value)s (%(percent)s %%).", value=significant(current, 6),
             percent=significant(100 * current, 6))
    try:
        value = float(text)
    except ValueError:
        abort(400, description=_("%(condition)s: please enter a threshold as a number between 0 and 1. %(kept)s",
                                 condition=label, kept=kept))
    if not 0.0 <= value <= 1.0:
        abort(400, description=_("%(condition)s: %(value)s is not between 0 and 1 (for example 0.3 for 30 %%). %(kept)s",
                                 condition=label, value=text.strip(), kept=kept))
    return value


def _explain_refused(status: int, message: str):
    """Why no heatmap: beside the button that asked (an HTMX request), not at the top of the page."""
    if request.headers.get("HX-Request"):
        return render_template("partials/live_explain.html", refusal=message), status
    abort(status, description=message)


@bp.post("/explain")
def explain():
    """A Grad-CAM heatmap for the last frame's crop: for ``condition_id``, else the active alert, else the top match."""
    live = _live()
    if live is None:
        return _explain_refused(410, _("There is no live scan in this session to explain. Press Start first."))
    chosen = clinical_app()
    if not chosen.explainer:
        return _explain_refused(409, _("This modality has no heatmap."))
    crop_jpeg, template_set, at = live.last_crop_jpeg, live.last_template_set, live.last_crop_at
    if not crop_jpeg:
        return _explain_refused(409, _("There is no frame to explain yet: the last frame had nothing in view to analyse. "
                                       "Point the camera at the spot and try again."))
    bank = bank_for(chosen)
    condition_id = request.form.get("condition_id") or None
    if condition_id is not None and condition_id not in {c.id for c in bank.conditions}:
        return _explain_refused(400, _("That condition is not part of this modality."))
    if condition_id is None:
        alerts = live.current_alerts()  # what the clinician is looking at, not whatever scored highest
        condition_id = alerts[0].condition_id if alerts else None
    if not live.explain_lock.acquire(blocking=False):
        return _explain_refused(429, _("A heatmap for this session is already being computed. Please wait for it."))
    try:
        heatmap = explain_live_crop(crop_jpeg, template_set, condition_id, settings(),
                                    float(current_app.config["LIVE_EXPLAIN_TIMEOUT"]))
    except NotReady as exc:
        return _explain_refused(409, exc.message)
    except (QueueFull, WorkerTimeout) as exc:
        return _explain_refused(503, exc.message)
    finally:
        live.explain_lock.release()
    picture = "data:image/png;base64," + base64.b64encode(heatmap.png).decode("ascii")
    return render_template("partials/live_explain.html", heatmap=picture, condition=bank.condition(heatmap.condition_id),
                           probability=heatmap.probability, at=at)


# -- the alert log, made on the fly and never cached ---------------------------
def _log_download(body: str, mimetype: str, extension: str) -> Response:
    stamp = user_now().strftime("%Y%m%d-%H%M%S")
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="privascan-alerts-{stamp}.{extension}"',
        "Cache-Control": "no-store",
    })


def _log_alerts():
    data = current_data()
    return data.live.log_snapshot() if data is not None and data.live is not None else []


@bp.get("/log.csv")
def log_csv_download():
    return _log_download(log_csv(_log_alerts(), user_zone()), "text/csv", "csv")


@bp.get("/log.json")
def log_json_download():
    alerts = log_json(_log_alerts(), user_zone())
    body = {"generated_at": user_now().isoformat(timespec="seconds"), "time_zone": zone_label(),
            "count": len(alerts), "alerts": alerts}
    return _log_download(json.dumps(body, indent=2, ensure_ascii=False), "application/json", "json")


@bp.post("/log/clear")
def clear_log():
    data = current_data()
    if data is not None and data.live is not None:
        data.live.clear_log()
        get_store().save_live(data)
    return _render("partials/live_log.html", [("info", _("The alert log of this session was deleted."))])
