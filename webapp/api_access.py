"""Who may call ``/api/*``: no other web site, ever; and, with keys configured, only their holders.

Cross-site: a page on any other site can make a visitor's browser submit a
form to ``/api/analyze`` (a multipart POST needs no CORS preflight), so
anyone's page could spend this server's compute. Browsers say where a
request comes from: ``Origin`` (on every POST) and ``Sec-Fetch-Site``.
A request whose ``Origin`` is not this server's own (``null`` included),
or that the browser marks ``cross-site``, is refused with 403, with or
without a key. Clinic systems calling from a script send neither header.

Keys: ``PRIVASCAN_API_KEYS`` (comma-separated) is read once at start-up
and only the SHA-256 of each key is kept; a request then needs
``Authorization: Bearer <key>``, compared in constant time with every
configured hash (401 otherwise, with ``WWW-Authenticate: Bearer``).
Without the setting the API is open to whoever can reach the server (bind
it to loopback or put it behind the proxy; docs/api.md).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, abort, current_app, request

CROSS_SITE = ("Requests to the API from another web site are refused: call it from the clinic's own system, "
              "not from a web page elsewhere.")
NEEDS_KEY = "This API needs a key: send it as 'Authorization: Bearer <key>' (ask the clinic's administrator)."


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_hashes(setting: str | None) -> tuple[bytes, ...]:
    """The hashes of the comma-separated keys of PRIVASCAN_API_KEYS (the keys themselves are not kept)."""
    return tuple(hash_key(key.strip()) for key in (setting or "").split(",") if key.strip())


def init_app(app: Flask) -> None:
    app.before_request(_check_api_access)


def _same_origin(origin: str) -> bool:
    return origin.rstrip("/").lower() == f"{request.scheme}://{request.host}".lower()


def _check_api_access():
    if request.blueprint != "api":
        return None
    origin = request.headers.get("Origin")
    if (origin is not None and not _same_origin(origin)) or request.headers.get("Sec-Fetch-Site") == "cross-site":
        abort(403, description=CROSS_SITE)
    hashes = current_app.config.get("API_KEY_HASHES") or ()
    if not hashes:
        return None
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    sent = sent.strip()
    if scheme.lower() != "bearer" or not sent:
        _refuse()
    sent_hash = hash_key(sent)
    matched = False
    for known in hashes:  # every hash compared, in constant time: no early exit
        matched |= hmac.compare_digest(sent_hash, known)
    if not matched:
        _refuse()
    return None


def _refuse():
    abort(401, description=NEEDS_KEY)  # errors.py adds WWW-Authenticate: Bearer
