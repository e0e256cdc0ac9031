"""Error pages a person can read, in the page and with the right status.

A 4xx says what was wrong in plain words; a 5xx says only that something
failed, with an incident id that is also in the server log, and never the
exception text or a traceback.
"""

from __future__ import annotations

import logging
import secrets

from flask import Flask, current_app, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .i18n import N_

log = logging.getLogger(__name__)

# Marked here, translated when an error is shown (the request's language).
FRIENDLY = {
    400: N_("The request could not be understood."),
    401: N_("This needs a key."),
    403: N_("This action is not allowed."),
    404: N_("That photo or page does not exist (it may have been deleted, or your session may have ended)."),
    405: N_("That action is not available here."),
    410: N_("Your session had ended."),
    413: N_("That upload is too large."),
    415: N_("That kind of file is not supported."),
    429: N_("Too many requests at once. Please slow down."),
    503: N_("The server is busy. Please try again shortly."),
}


UNAVAILABLE = N_("The service is unavailable for a moment (its session storage cannot be reached). "
                 "Please try again shortly.")


def render_error(status: int, message: str):
    """The messages partial for HTMX requests, the full page otherwise."""
    if request.path.startswith("/api/"):
        return {"error": message, "status": status}, status, {}
    if request.headers.get("HX-Request"):
        # Whatever the request targeted (a card, the timeline), the message
        # goes into the message area (out of band, so the live region stays
        # and announces it) and the rest of the page is left untouched.
        body = render_template("partials/messages.html", messages=[("error", message)], oob_messages=True)
        return body, status, {"HX-Retarget": "#messages", "HX-Reswap": "none"}
    # Every page carries the demo banner in demo mode, error pages too.
    return render_template("error.html", messages=[("error", message)], status=status, clinical_app=None,
                           demo=current_app.config.get("DEMO_MODEL", False)), status, {}


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 400
        description = exc.description if exc.description and exc.description != type(exc).description else ""
        if isinstance(exc, RequestEntityTooLarge) and not description:  # werkzeug's own, for the whole body
            limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
            length = request.content_length
            if length is not None and length <= app.config["MAX_CONTENT_LENGTH"]:
                # Werkzeug says 413 for too many form parts or too big a text field as well.
                parts = app.config["MAX_FORM_PARTS"]
                message = gettext("That upload had too many parts (at most %(parts)d photos and fields are accepted in "
                                  "one go) or an over-long text field. Send fewer photos at a time.", parts=parts)
            else:
                message = gettext("That upload is larger than the %(limit)d MB allowed in one go. Send fewer or "
                                  "smaller photos.", limit=limit)
        else:
            message = description or gettext(FRIENDLY.get(status, N_("The request could not be completed.")))
        body, status, headers = render_error(status, message)
        if status == 503:
            headers["Retry-After"] = "30"
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"  # the JSON API's keys (webapp/api_access.py)
        return body, status, headers

    from .store import StoreFull

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull):
        # Redis out of memory can surface in any write; same polite answer as the caps.
        body, status, headers = render_error(exc.status, exc.message)
        if status == 503:
            headers["Retry-After"] = "30"
        return body, status, headers

    if app.config.get("REDIS_URL"):
        import redis

        @app.errorhandler(redis.exceptions.ConnectionError)
        @app.errorhandler(redis.exceptions.TimeoutError)
        def redis_unavailable(exc: Exception):
            # Scale-out mode with Redis gone: say so, no traceback; the next
            # request after Redis returns simply works (redis-py reconnects).
            log.error("Redis unavailable on %s (%s)", request.endpoint, type(exc).__name__)
            body, status, headers = render_error(503, gettext(UNAVAILABLE))
            headers["Retry-After"] = "15"
            return body, status, headers

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        incident = secrets.token_hex(4)
        log.error("incident %s: unhandled %s on %s", incident, type(exc).__name__, request.endpoint, exc_info=exc)
        return render_error(500, gettext("Something went wrong on our side (incident %(incident)s). Your photos are "
                                         "unaffected; please try again.", incident=incident))
