"""A refusal that left the request body unread must not break the keep-alive connection.

A view (or a check before it: CSRF, an ended session, a rate limit) may
answer 4xx/5xx without reading an upload. The unread bytes are still on the
connection; gunicorn drains at most 64 KB of them and then closes it
silently, although its response said ``keep-alive``, so the client's next
request on that connection is dropped without an answer. Here such a body
is read and discarded (up to the request cap, a bounded amount) before the
response goes out, and the response says ``Connection: close`` for servers
that honour it (Werkzeug's; gunicorn keeps its own connection header), so
the client opens a fresh connection for its next request either way.
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
