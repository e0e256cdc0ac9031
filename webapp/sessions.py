"""Anonymous, in-memory sessions: flask-session for the cookie, our store for the bytes.

flask-session keeps a tiny server-side dict per browser (``store_id``, the
CSRF token, when the session started) in a cachelib ``SimpleCache`` in this
process's memory. It must be given explicitly: without ``SESSION_CACHELIB``
flask-session falls back to a cache on disk. A plain ``SimpleCache`` evicts
the least recently active entries once it holds more than its threshold, so a
flood of cookie-less requests could log everyone else out; ``VisitorCache``
refuses newcomers instead, and they are told the server is busy.

Nothing is kept on the server for a browser until it stores something
(its first photo, a setting, a live scan): the CSRF token a page carries is
derived from a random value in its own cookie (``privascan_csrf``, signed
with the app's secret key), not kept in a server-side session, so a flood of
cookie-less requests (``GET /nope`` ten thousand times) creates nothing and
locks nobody out. When a session first gets data (its store is created) its
id changes, so an id an attacker planted in the victim's browser beforehand
(session fixation) never sees the victim's photos. With Secure cookies the
names carry the ``__Host-`` prefix: a sibling subdomain cannot set them.

Scale-out mode (``PRIVASCAN_REDIS_URL``): flask-session's Redis backend holds
that small dict instead, and ``webapp.redis_store`` the bytes, sealed with a
per-session key that lives only in the browser's second HttpOnly cookie
(``privascan_key``); any web replica can then serve any request.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
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
CSRF_COOKIE = "privascan_csrf"
SESSION_COOKIE = "privascan_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
BUSY = Message(N_("The server is serving as many people as it can. Please try again in a few minutes."))


def cookie_name(config, base: str) -> str:
    """``__Host-`` + name when cookies are Secure: the browser then refuses the cookie unless it was set
    by this very host over HTTPS, for path /, without a Domain (no sibling subdomain can plant it)."""
    return f"__Host-{base}" if config.get("SESSION_COOKIE_SECURE") else base


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
        SESSION_COOKIE_NAME=cookie_name(app.config, SESSION_COOKIE),
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
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
    app.after_request(_keep_csrf_cookie)
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
    if not session and request.method not in SAFE_METHODS and request.blueprint != "api" \
            and visitors is not None and visitors.is_full():
        # A newcomer about to store something while the visitor table is full: nobody
        # else is evicted. (Reading pages never needs an entry, so it never hits this.)
        abort(503, description=BUSY)
    store = get_store()
    key_cookie = cookie_name(current_app.config, KEY_COOKIE)
    data = store.get(session.get("store_id"), secret=key_from_cookie(request.cookies.get(key_cookie)))
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
        # A cookie the server no longer knows (expired or from before a restart): a
        # session is only ever issued holding something, so an empty one is unknown.
        g.session_ended = bool(request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])) and not session
    g.store_data = data


def current_data(create: bool = False) -> SessionData | None:
    """This browser's store; created on first need (the first upload), never shared.

    Creating it gives the session a new id: an id planted in this browser
    before (session fixation) is worth nothing from now on.
    """
    data = g.get("store_data")
    if data is None and create:
        data = get_store().create()
        session["store_id"] = data.id
        session["started"] = time.time()
        current_app.session_interface.regenerate(session)
        g.store_data = data
        g.new_session_key = data.secret
    return data


def _keep_session_key_cookie(response):
    """Scale-out mode: hand a new session's key to the browser; drop it once the session is gone."""
    new_key = g.get("new_session_key")
    config = current_app.config
    name = cookie_name(config, KEY_COOKIE)
    if new_key:
        response.set_cookie(
            name, key_to_cookie(new_key), max_age=int(config["SESSION_LIFETIME_HOURS"] * 3600),
            httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax", path="/",
        )
    elif request.cookies.get(name) and not session.get("store_id"):
        response.delete_cookie(name, path="/", httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax")
    return response


# -- CSRF: a token from a cookie, with nothing kept on the server ----------------------
def _csrf_seed() -> str:
    """This browser's CSRF seed (from its cookie), or a new one that the response will set."""
    seed = g.get("csrf_seed")
    if seed is None:
        sent = request.cookies.get(cookie_name(current_app.config, CSRF_COOKIE), "")
        if sent.isascii() and 16 <= len(sent) <= 64:
            seed = sent
        else:
            seed = secrets.token_urlsafe(24)
            g.new_csrf_seed = True
        g.csrf_seed = seed
    return seed


def _token_for(seed: str) -> str:
    """The page's token: an HMAC of the seed under the app's secret (shared by every replica)."""
    secret = current_app.secret_key
    secret = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(secret, b"privascan csrf v1:" + seed.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def csrf_token() -> str:
    return _token_for(_csrf_seed())


def _keep_csrf_cookie(response):
    if g.get("new_csrf_seed"):
        config = current_app.config
        response.set_cookie(
            cookie_name(config, CSRF_COOKIE), g.csrf_seed, max_age=int(config["SESSION_LIFETIME_HOURS"] * 3600),
            httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax", path="/",
        )
    return response


def tokens_match(expected: str | None, sent: str | None) -> bool:
    """A constant-time comparison that never raises.

    ``hmac.compare_digest`` raises TypeError for a str that is not ASCII (a
    header ``X-CSRF-Token: é``): a token we issued is always ASCII, so
    anything else is simply a wrong token (403), never a 500.
    """
    if not expected or not isinstance(sent, str) or not sent.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), sent.encode("ascii"))


def _check_csrf() -> None:
    if request.method in SAFE_METHODS or current_app.config.get("CSRF_DISABLED"):
        return
    if request.blueprint == "api":  # stateless JSON API: no cookie, nothing to forge
        return
    seed = request.cookies.get(cookie_name(current_app.config, CSRF_COOKIE), "")
    expected = _token_for(seed) if seed.isascii() and 16 <= len(seed) <= 64 else None
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    if not tokens_match(expected, sent):
        if g.get("session_ended"):
            abort(410, description=Message(N_("Your session had ended, so this page was out of date. It has been refreshed: please try again.")))
        abort(403, description=Message(N_("This page was out of date (its security token did not match). Please reload the page and try again.")))
