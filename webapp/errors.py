"""Error pages a person can read, in the page and with the right status.

A 4xx says what was wrong in plain words; a 5xx says only that something
failed, with an incident id that is also in the server log, and never the
exception text or a traceback.
"""

from __future__ import annotations

import logging
import secrets

from flask import Flask, current_app, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

FRIENDLY = {
    400: "The request could not be understood.",
    401: "This needs a key.",
    403: "This action is not allowed.",
    404: "That photo or page does not exist (it may have been deleted, or your session may have ended).",
    405: "That action is not available here.",
    410: "Your session had ended.",
    413: "That upload is too large.",
    415: "That kind of file is not supported.",
    429: "Too many requests at once. Please slow down.",
    503: "The server is busy. Please try again shortly.",
}


UNAVAILABLE = ("The service is unavailable for a moment (its session storage cannot be reached). "
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
                message = (f"That upload had too many parts (at most {parts} photos and fields are accepted in one go) "
                           "or an over-long text field. Send fewer photos at a time.")
            else:
                message = f"That upload is larger than the {limit} MB allowed in one go. Send fewer or smaller photos."
        else:
            message = description or FRIENDLY.get(status, "The request could not be completed.")
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
            body, status, headers = render_error(503, UNAVAILABLE)
            headers["Retry-After"] = "15"
            return body, status, headers

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        incident = secrets.token_hex(4)
        log.error("incident %s: unhandled %s on %s", incident, type(exc).__name__, request.endpoint, exc_info=exc)
        return render_error(500, f"Something went wrong on our side (incident {incident}). Your photos are unaffected; please try again.")
