"""A per-client request rate limit (flask-limiter, counted in this process's memory).

One client (one address) may send at most ``RATE_LIMIT`` requests (default
100 a second and 6,000 a minute: a page with 40 cards polling once a second
stays far below it), and at most ``RATE_LIMIT_UPLOADS`` of the requests that
decode or analyse an image (photo uploads, the JSON API; default 60 a
minute). Beyond that the answer is 429 with ``Retry-After`` and a sentence.
Static files are not counted.

The client's address is the connection's, or with ``PRIVASCAN_BEHIND_PROXY=1``
the one the proxy puts in ``X-Forwarded-For`` (Werkzeug's ProxyFix, installed
by ``webapp.security``, has replaced ``remote_addr`` by then); without that
setting the header is ignored, since anyone could send it. Counts live in
memory only (``memory://``): nothing is written anywhere, and in scale-out mode
each replica counts on its own.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from .i18n import N_, Message

TOO_MANY = Message(N_("Too many requests from your address in a short time, so this one was not handled. "
                      "Please wait a moment and try again."))
# Endpoints that decode or analyse an image: the expensive ones.
IMAGE_ENDPOINTS = ("photos.upload", "api.analyse")


def init_app(app: Flask) -> None:
    config = app.config
    limiter = Limiter(
        get_remote_address,
        app=app,
        # One count per client across every route (flask-limiter's default limits count per route).
        application_limits=[config["RATE_LIMIT"]] if config["RATE_LIMIT"] else [],
        storage_uri="memory://",
        headers_enabled=True,  # Retry-After (and the X-RateLimit-* figures) on every answer
        enabled=config["RATE_LIMIT_ENABLED"],
        strategy="fixed-window",
    )

    @limiter.request_filter
    def not_counted() -> bool:
        return request.endpoint == "static" or request.blueprint in ("plugin_static", "health")

    app.extensions["privascan_limiter"] = limiter

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded):
        from .errors import render_error

        return render_error(429, TOO_MANY)


def limit_image_endpoints(app: Flask) -> None:
    """The stricter limit on uploads and API analyses; called once their blueprints are registered."""
    limiter: Limiter = app.extensions["privascan_limiter"]
    limit = app.config["RATE_LIMIT_UPLOADS"]
    if not limit:
        return
    for endpoint in IMAGE_ENDPOINTS:
        view = app.view_functions.get(endpoint)
        if view is not None:  # flask-limiter checks a decorated limit inside the wrapper it returns
            app.view_functions[endpoint] = limiter.limit(limit)(view)
