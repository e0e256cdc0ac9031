"""flask-session's Redis backend, made to answer 503 (not 500) while Redis is away.

Flask opens the session before any view or error handler of ours runs, so a
Redis outage there would surface as an unexplained 500. Here the failure is
noted on ``g`` and an empty session returned; ``webapp.sessions`` then
answers the request with the "service unavailable" page, and saving is
skipped. redis-py reconnects by itself, so the first request after Redis is
back is served normally.
"""

from __future__ import annotations

import logging

import redis
from flask import g
from flask_session.redis import RedisSessionInterface

log = logging.getLogger(__name__)


class OutageAwareRedisSessionInterface(RedisSessionInterface):
    def open_session(self, app, request):
        try:
            return super().open_session(app, request)
        except redis.RedisError as exc:
            log.error("Redis unavailable while opening a session (%s)", type(exc).__name__)
            g.redis_unavailable = True
            return self.session_class(sid=self._generate_sid(self.sid_length), permanent=self.permanent)

    def save_session(self, app, session, response):
        if g.get("redis_unavailable"):
            return
        try:
            super().save_session(app, session, response)
        except redis.RedisError as exc:
            log.error("Redis unavailable while saving a session (%s)", type(exc).__name__)
