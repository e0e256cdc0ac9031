"""``/healthz`` (the process answers) and ``/readyz`` (it can analyse), for nginx, systemd or a load balancer.

Both answer before sessions are looked at (their ``before_request`` is
registered ahead of the session code, and a before-request that returns a
response ends the request there): a probe never creates a session, a
visitor-table entry or a cookie, is not turned away when the visitor table
is full, and still answers while Redis is away. Security headers and
``Cache-Control: no-store`` are added as on every response.

Readiness: embedded mode, the default modality's model is loaded; scale-out
mode (``PRIVASCAN_REDIS_URL``), Redis answers and at least one
``privascan worker`` has that model ready (its heartbeat, ``webapp/fleet.py``).
"""

from __future__ import annotations

import redis
from flask import Blueprint, Flask, current_app, jsonify, request

bp = Blueprint("health", __name__)


def init_app(app: Flask) -> None:
    """Call before ``sessions.init_app`` so these probes answer ahead of the session code."""
    app.register_blueprint(bp)
    app.before_request(_answer_probes_first)


def _answer_probes_first():
    if request.blueprint == "health" and request.endpoint in current_app.view_functions:
        return current_app.view_functions[request.endpoint]()
    return None


@bp.get("/healthz")
def healthz():
    return jsonify(status="alive")


@bp.get("/readyz")
def readyz():
    checks: dict[str, str] = {}
    ready = True
    client = current_app.extensions.get("privascan_redis")
    if client is not None:
        try:
            client.ping()
            checks["redis"] = "reachable"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            ready = False
    registry = current_app.extensions["privascan_registry"]
    classifier = registry.app(current_app.config["CLINICAL_APP"]).classifier
    status = current_app.extensions["privascan_models"].status(classifier) if ready else None
    if status is not None:
        checks["model"] = status.message
        ready = status.ready
    response = jsonify(ready=ready, **checks)
    response.status_code = 200 if ready else 503
    return response
