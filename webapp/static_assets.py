"""Versioned static files with long caching, and a URL map that never redirects.

Every ``url_for('static', ...)`` and ``url_for('plugin_static.static_file', ...)``
gets ``?v=<first 12 hex digits of the file's SHA-256>`` (a ``url_defaults``
hook, so templates stay as they are). A request whose ``v`` is the file's
current hash is answered with ``Cache-Control: public, max-age=31536000,
immutable``: the browser keeps it for a year and never asks again, and a
changed file gets a new URL. Any other request for a static file (no ``v``,
or an old one) gets ``no-cache``, so it is revalidated (ETag) every time.
Static files are the package's own (htmx, CSS, JS, icons), never user data.

Werkzeug's routing answers ``//`` (and ``/static//app.css``) with a redirect
to the merged path whose ``Location`` is built from the request's Host
header, so anyone able to set Host could make PrivaScan point a browser
elsewhere. Slashes are not merged here: such paths are simply 404. (No rule
ends in a slash, so Werkzeug's other redirect, adding one, never happens.)
"""

from __future__ import annotations

import hashlib
import os

from flask import Flask, current_app, request

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def init_app(app: Flask) -> None:
    app.url_map.merge_slashes = False
    app.extensions["privascan_static_hashes"] = {}
    app.url_defaults(_add_version)
    app.after_request(_cache_headers)


def _folder(endpoint: str, values: dict) -> str | None:
    if endpoint == "static":
        return current_app.static_folder
    if endpoint == "plugin_static.static_file":
        return current_app.extensions.get("privascan_plugin_static", {}).get(values.get("plugin"))
    return None


def content_hash(folder: str, filename: str) -> str | None:
    """The file's version, or None when it is not a file inside ``folder``."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, filename))
    if not path.startswith(root + os.sep):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    hashes = current_app.extensions["privascan_static_hashes"]
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in hashes:
        with open(path, "rb") as handle:
            hashes[key] = hashlib.sha256(handle.read()).hexdigest()[:12]
    return hashes[key]


def _add_version(endpoint: str, values: dict) -> None:
    if "v" in values or "filename" not in values:
        return
    folder = _folder(endpoint, values)
    if folder:
        version = content_hash(folder, values["filename"])
        if version:
            values["v"] = version


def _cache_headers(response):
    if request.endpoint not in ("static", "plugin_static.static_file") or response.status_code not in (200, 304):
        return response
    folder = _folder(request.endpoint, request.view_args or {})
    filename = (request.view_args or {}).get("filename", "")
    current = content_hash(folder, filename) if folder else None
    versioned = current is not None and request.args.get("v") == current
    response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
    return response
