"""A refusal that left the request body unread must not break the keep-alive connection.

A view (or a check before it: CSRF, an ended session, a rate limit) may
answer 4xx/5xx without reading an upload. On a server that streams bodies
to the app, the unread bytes are still on the connection: gunicorn's gthread
worker drains at most 64 KB of them and then closes it silently, although
its response said ``keep-alive``, so the client's next request on that
connection was dropped without an answer. Here such a body is read and
discarded (up to the request cap, a bounded amount) before the response goes
out, and the response says ``Connection: close`` for servers that honour it
(Werkzeug's), so the client's next request is answered either way. The
production worker (``webapp/server.py``) reads every body whole before the
app runs, so there the drain costs nothing; this keeps any other server
(the development server, a plain gthread gunicorn) correct too.
"""

from __future__ import annotations

from flask import Flask, current_app, request

CHUNK = 64 * 1024


def init_app(app: Flask) -> None:
    app.after_request(_finish_unread_body)


def _finish_unread_body(response):
    length = request.content_length
    if response.status_code < 400 or not length:
        return response
    if length > current_app.config["MAX_CONTENT_LENGTH"]:
        # Werkzeug refused it (413) for its size: reading it all is what the cap
        # is there to avoid, so the connection just closes.
        response.headers["Connection"] = "close"
        return response
    stream = request.stream
    if getattr(stream, "is_exhausted", True):
        return response
    response.headers["Connection"] = "close"
    try:
        while stream.read(CHUNK):
            pass
    except Exception:  # the client went away: nothing left to protect
        pass
    return response
