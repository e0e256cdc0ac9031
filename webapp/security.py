"""Security headers on every response.

A strict Content-Security-Policy: everything from our own origin, no inline
script or style (htmx is configured not to inject its indicator style), and no
request to any third party can even be expressed by a page.
"""

from __future__ import annotations

from flask import Flask, request


def init_app(app: Flask) -> None:
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
        if not request.path.startswith("/static/"):
            # Pages, partials and images all carry user data: never cache them.
            response.headers["Cache-Control"] = "no-store"
        response.headers.pop("Server", None)
        return response
