"""/healthz and /readyz: what a proxy or load balancer asks, answered without creating a session."""

from __future__ import annotations

import pytest

from tests.helpers import Browser

from webapp.models import ModelStatus


def _no_session_made(app, reply) -> None:
    assert "Set-Cookie" not in reply.headers
    visitors = app.config.get("SESSION_CACHELIB")
    if visitors is not None:
        assert len(visitors._cache) == 0  # no visitor-table entry either


def test_healthz_answers_without_a_session(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    client = app.test_client()
    for _ in range(3):
        reply = client.get("/healthz")
        assert reply.status_code == 200
        assert reply.get_json() == {"status": "alive"}
        assert reply.headers["Cache-Control"] == "no-store"
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
        _no_session_made(app, reply)


def test_readyz_waits_for_the_model_then_says_ready(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    client = app.test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["ready"] is False
    _no_session_made(app, reply)
    models = app.extensions["privascan_models"]
    models.start()
    models.wait(120)
    reply = client.get("/readyz")
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["ready"] is True
    _no_session_made(app, reply)


def test_readyz_says_why_a_model_is_unavailable(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    models = app.extensions["privascan_models"]
    classifier = app.extensions["privascan_registry"].app(app.config["CLINICAL_APP"]).classifier
    models._set(classifier, state="unavailable", message="The model folder does not exist.")
    reply = app.test_client().get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json() == {"ready": False, "model": "The model folder does not exist."}


def test_probes_answer_when_the_visitor_table_is_full(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False, MAX_VISITORS=1, MAX_SESSIONS=1)
    first = Browser(app.test_client())
    assert first.post("/settings", data={"app": "dermatology"}).status_code == 200  # takes the only visitor entry
    newcomer = Browser(app.test_client())
    # A person who would store something is told "busy" (reading pages needs no entry: issue 13).
    assert newcomer.post("/settings", data={"app": "dermatology"}).status_code == 503
    newcomer = newcomer.client
    assert newcomer.get("/healthz").status_code == 200  # the probe is not
    assert newcomer.get("/readyz").status_code == 503 and newcomer.get("/readyz").get_json()["ready"] is False


@pytest.mark.timeout(120)
def test_readyz_in_scale_out_mode_needs_redis_and_a_ready_worker(app_factory, redis_url):
    import json
    import time

    import redis

    from webapp.fleet import HEARTBEAT_TTL, WORKER_PREFIX

    app = app_factory(REDIS_URL=redis_url, SECRET_KEY="k" * 64)
    client = app.test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["redis"] == "reachable"
    assert "No inference worker" in reply.get_json()["model"]
    _no_session_made(app, reply)
    # A worker's heartbeat, as `privascan worker` writes it (webapp/fleet.py), with the model ready.
    classifier = app.extensions["privascan_registry"].app(app.config["CLINICAL_APP"]).classifier
    beat = {"id": "w1", "device": "cpu", "queues": ["photos"], "current": "", "jobs_done": 0, "at": time.time(),
            "statuses": {classifier: {"state": "ready", "message": "Model ready.", "advice": ""}}}
    redis.Redis.from_url(redis_url).set(WORKER_PREFIX + "w1", json.dumps(beat), ex=HEARTBEAT_TTL)
    reply = client.get("/readyz")
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == {"ready": True, "redis": "reachable", "model": "1 worker ready (cpu, all idle)."}
    assert client.get("/healthz").status_code == 200


def test_readyz_says_redis_is_away(app_factory, redis_url):
    app = app_factory(REDIS_URL=redis_url, SECRET_KEY="k" * 64)
    app.extensions["privascan_redis"].connection_pool.reset()
    app.extensions["privascan_redis"].connection_pool.connection_kwargs["port"] = 1  # nothing listens there
    client = app.test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["redis"].startswith("unreachable")
    assert client.get("/healthz").status_code == 200  # the process itself is alive
