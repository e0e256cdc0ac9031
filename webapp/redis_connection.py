"""Connecting to the operator's Redis, and refusing one that would write to disk.

Scale-out mode (``PRIVASCAN_REDIS_URL``) keeps sessions and photos in Redis,
so Redis must be as forgetful as the embedded store: no RDB snapshots
(``save ""``) and no append-only file (``appendonly no``). Both are read with
``CONFIG GET`` at start-up, by web replicas and workers alike, and anything
else stops the process with a message saying what to change. A Redis that
cannot be reached stops it too: starting without state would only fail later.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0


class RedisRefused(Exception):
    """Start-up stops here; the message says why and what to change."""


def connect(url: str, socket_timeout: float | None = COMMAND_TIMEOUT) -> redis.Redis:
    """A client for ``url`` (redis:// or rediss://, password or ACL user in the URL); no I/O yet."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        # A blip is retried briefly; an outage fails fast so pages can say so (503) at once.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def check_redis(client: redis.Redis, url: str) -> None:
    """Raise RedisRefused unless Redis answers and keeps nothing on disk."""
    where = describe(url)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise RedisRefused(f"Redis at {where} refused the password or user in PRIVASCAN_REDIS_URL.") from None
    except redis.RedisError as exc:
        raise RedisRefused(
            f"Redis at {where} cannot be reached ({type(exc).__name__}). Start it, or correct PRIVASCAN_REDIS_URL."
        ) from None
    try:
        save = client.config_get("save").get("save", None)
        appendonly = client.config_get("appendonly").get("appendonly", None)
    except redis.RedisError:
        raise RedisRefused(
            f"Redis at {where} does not allow CONFIG GET, so PrivaScan cannot check that it keeps nothing on disk. "
            "Allow CONFIG GET for PrivaScan's user (ACL: +config|get)."
        ) from None
    problems = []
    if save not in ("", None) and str(save).strip() != "":
        problems.append(f'save is "{save}" (snapshots to disk); set save ""')
    if str(appendonly).lower() != "no":
        problems.append(f'appendonly is "{appendonly}"; set appendonly no')
    if problems:
        raise RedisRefused(
            f"Redis at {where} writes its memory to disk, and PrivaScan keeps photos there: "
            + "; ".join(problems)
            + ". Change redis.conf (or CONFIG SET) and start PrivaScan again. See docs/scaling.md."
        )


def init_app(app) -> None:
    """Scale-out mode: connect, check, and keep the client for the session store and the job queue."""
    url = app.config["REDIS_URL"]
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise RedisRefused("PRIVASCAN_REDIS_URL must start with redis:// or rediss:// (TLS).")
    if app.config.get("SECRET_KEY_GENERATED"):
        raise RedisRefused(
            "Scale-out mode needs PRIVASCAN_SECRET_KEY, the same long random value on every web replica and worker "
            "(for example: python -c 'import secrets; print(secrets.token_hex(32))')."
        )
    client = connect(url)
    check_redis(client, url)
    app.extensions["privascan_redis"] = client
