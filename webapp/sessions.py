"""Anonymous, in-memory sessions: flask-session for the cookie, our store for the bytes.

flask-session keeps a tiny server-side dict per browser (``store_id``, the
CSRF token, when the session started) in a cachelib ``SimpleCache`` in this
process's memory. It must be given explicitly: without ``SESSION_CACHELIB``
flask-session falls back to a cache on disk. A plain ``SimpleCache`` evicts
the least recently active entries once it holds more than its threshold, so a
flood of cookie-less requests could log everyone else out; ``VisitorCache``
refuses newcomers instead, and they are told the server is busy.

Scale-out mode (``PRIVASCAN_REDIS_URL``): flask-session's Redis backend holds
that small dict instead, and ``webapp.redis_store`` the bytes, sealed with a
per-session key that lives only in the browser's second HttpOnly cookie
(``privascan_key``); any web replica can then serve any request.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import time

from cachelib import SimpleCache
from flask import Flask, abort, current_app, g, request, session
from flask_session import Session
from htmx_flask.requests import HtmxAwareRequest

from .i18n import N_, Message
from .session_crypto import KEY_COOKIE, key_from_cookie, key_to_cookie
from .store import SessionData, SessionStore

SWEEP_EVERY_SECONDS = 30
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class InMemoryRequest(HtmxAwareRequest):
    """A request whose uploads are never spooled to a temporary file.

    Werkzeug writes any upload over 500 KB to a temp file by default; the
    body size is already capped by MAX_CONTENT_LENGTH (and the number of parts
    by Flask's MAX_FORM_PARTS), so memory stays bounded.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        import io

        return io.BytesIO()


class VisitorCache(SimpleCache):
    """A SimpleCache that never evicts a live session to make room for a new one."""

    def _make_room(self) -> bool:
        if len(self._cache) >= self._threshold:
            self._remove_expired(time.time())
        return len(self._cache) < self._threshold

    def set(self, key, value, timeout=None):
        with self._lock:
            if key not in self._cache and not self._make_room():
                return False  # a newcomer when full: refused, nobody is logged out
            return super().set(key, value, timeout)

    def add(self, key, value, timeout=None):
        with self._lock:
            if key not in self._cache and not self._make_room():
                return False
            return super().add(key, value, timeout)

    def is_full(self) -> bool:
        with self._lock:
            return not self._make_room()

    def __len__(self) -> int:
        return len(self._cache)


def init_app(app: Flask) -> None:
    idle = dt.timedelta(minutes=app.config["SESSION_IDLE_MINUTES"])
    app.config.update(
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=idle,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="privascan_session",
    )
    caps = dict(
        idle_seconds=idle.total_seconds(),
        lifetime_seconds=app.config["SESSION_LIFETIME_HOURS"] * 3600,
        max_sessions=app.config["MAX_SESSIONS"],
        max_photos=app.config["MAX_PHOTOS_PER_SESSION"],
        max_bytes=app.config["MAX_SESSION_BYTES"],
        max_total_bytes=app.config.get("MAX_TOTAL_BYTES"),
    )
    client = app.extensions.get("privascan_redis")
    if client is not None:
        from .redis_store import PREFIX, RedisSessionStore

        # Redis's maxmemory bounds everyone together; MAX_SESSIONS bounds the stores.
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=PREFIX + "session:")
        store = RedisSessionStore(client, **caps)
        Session(app)
        from .redis_sessions import OutageAwareRedisSessionInterface

        app.session_interface = OutageAwareRedisSessionInterface(
            app, client=client, key_prefix=PREFIX + "session:", use_signer=False, permanent=True,
        )
    else:
        visitors = max(app.config.get("MAX_VISITORS", 10_000), app.config["MAX_SESSIONS"])
        app.config.update(
            SESSION_TYPE="cachelib",
            SESSION_CACHELIB=VisitorCache(threshold=visitors, default_timeout=int(idle.total_seconds())),
        )
        store = SessionStore(**caps)
        Session(app)
    app.request_class = InMemoryRequest
    app.extensions["privascan_store"] = store
    app.extensions["privascan_sweeper"] = _Sweeper(app)
    app.before_request(_load_session)
    app.before_request(_check_csrf)
    app.after_request(_keep_session_key_cookie)
    app.context_processor(lambda: {"csrf_token": csrf_token()})


def get_store() -> SessionStore:
    return current_app.extensions["privascan_store"]


def sweep_expired(app: Flask) -> int:
    """Delete expired stores and the expired entries of the session cache."""
    store = app.extensions["privascan_store"]
    deleted = store.sweep()
    cache = app.config.get("SESSION_CACHELIB")
    if cache is None:  # Redis: its TTLs delete expired session dicts themselves
        return deleted
    # SimpleCache only drops expired entries once it is over its threshold;
    # remove them now so nothing of an ended session lingers. Same clock as
    # the store (both are wall time), so tests can move both at once.
    with cache._lock:
        cache._remove_expired(store.now())
    return deleted


class _Sweeper:
    """Sweeps at most every SWEEP_EVERY_SECONDS, piggy-backing on requests."""

    def __init__(self, app: Flask):
        self._app = app
        self._last = 0.0
        self._lock = threading.Lock()

    def maybe_sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < SWEEP_EVERY_SECONDS:
                return
            self._last = now
        sweep_expired(self._app)


def _load_session() -> None:
    """Attach this browser's store (if any) to ``g``; note when an old session ended."""
    # /healthz and /readyz answer for themselves (readiness says Redis is away).
    if g.get("redis_unavailable") and request.endpoint != "static" and request.blueprint != "health":
        from .errors import UNAVAILABLE

        abort(503, description=UNAVAILABLE)
    current_app.extensions["privascan_sweeper"].maybe_sweep()
    visitors = current_app.config.get("SESSION_CACHELIB")
    if not session and request.endpoint != "static" and request.blueprint != "api" \
            and visitors is not None and visitors.is_full():
        # A newcomer while the visitor table is full: nobody else is evicted.
        abort(503, description=Message(N_("The server is serving as many people as it can. Please try again in a few minutes.")))
    store = get_store()
    data = store.get(session.get("store_id"), secret=key_from_cookie(request.cookies.get(KEY_COOKIE)))
    started = session.get("started", 0)
    if data is None and session.get("store_id"):
        g.session_ended = True
        session.pop("store_id", None)
    elif data is not None and time.time() - started > current_app.config["SESSION_LIFETIME_HOURS"] * 3600:
        store.delete(data.id)
        g.session_ended = True
        session.pop("store_id", None)
        data = None
    else:
        # A cookie the server no longer knows (expired or from before a restart).
        g.session_ended = bool(request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])) and not session.get("csrf")
    g.store_data = data


def current_data(create: bool = False) -> SessionData | None:
    """This browser's store; created on first need (the first upload), never shared."""
    data = g.get("store_data")
    if data is None and create:
        data = get_store().create()
        session["store_id"] = data.id
        session["started"] = time.time()
        g.store_data = data
        g.new_session_key = data.secret
    return data


def _keep_session_key_cookie(response):
    """Scale-out mode: hand a new session's key to the browser; drop it once the session is gone."""
    new_key = g.get("new_session_key")
    config = current_app.config
    if new_key:
        response.set_cookie(
            KEY_COOKIE, key_to_cookie(new_key), max_age=int(config["SESSION_LIFETIME_HOURS"] * 3600),
            httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax", path="/",
        )
    elif request.cookies.get(KEY_COOKIE) and not session.get("store_id"):
        response.delete_cookie(KEY_COOKIE, path="/", httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax")
    return response


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def _check_csrf() -> None:
    if request.method in SAFE_METHODS or current_app.config.get("CSRF_DISABLED"):
        return
    if request.blueprint == "api":  # stateless JSON API: no cookie, nothing to forge
        return
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(expected, sent):
        if g.get("session_ended"):
            abort(410, description=Message(N_("Your session had ended, so this page was out of date. It has been refreshed: please try again.")))
        abort(403, description=Message(N_("This page was out of date (its security token did not match). Please reload the page and try again.")))
