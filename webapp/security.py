"""Security headers on every response.

A strict Content-Security-Policy: everything from our own origin, no inline
script or style (htmx is configured not to inject its indicator style), and no
request to any third party can even be expressed by a page.

Behind a TLS-terminating proxy (``PRIVASCAN_BEHIND_PROXY=1``) Werkzeug's
ProxyFix trusts one proxy's X-Forwarded-* headers, so ``request.is_secure``
is true for HTTPS visitors and they get HSTS. Without that flag the headers
are ignored: anyone could send them.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix


def init_app(app: Flask) -> None:
    if app.config.get("BEHIND_PROXY"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)

    @app.after_request
    def add_headers(response):
        ancestors = app.config["FRAME_ANCESTORS"]
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            f"form-action 'self'; frame-ancestors {ancestors}"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Permissions-Policy"] = "camera=(self), microphone=(), geolocation=()"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if not request.path.startswith("/static/") and request.blueprint != "plugin_static":
            # Pages, partials and images all carry user data: never cache them
            # (static files, the core's and plugins', carry none).
            response.headers["Cache-Control"] = "no-store"
        # No server banner: gunicorn's own Server header is dropped in
        # gunicorn_conf.py. (Werkzeug's development server always adds its
        # version; it is for development only, never for serving a clinic.)
        response.headers.pop("Server", None)
        return response
