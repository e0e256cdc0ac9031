"""Sessions through the real app: expiry deletes everything, floods evict nobody, memory is capped overall.

test_store.py proves the store alone; here the same promises hold with the
Flask app, its cookies and flask-session's server-side cache in the loop.
Time moves by replacing the store's clock (the sweep expires the session
cache by the same clock), never by sleeping.
"""

from __future__ import annotations

import gc
import re
import time
import weakref

import pytest

import webapp.sessions
from tests.helpers import Browser, jpeg_bytes, make_app, multipart, photo_bytes


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


@pytest.fixture
def light_app(tiny_model_dir):
    """The real app without a model (none of these tests analyses), with room for 1,000 sessions."""
    app = make_app(tiny_model_dir, LOAD_MODELS_AT_START=False, MAX_SESSIONS=1100)
    yield app
    app.extensions["privascan_worker"].stop()


def test_a_thousand_sessions_with_photos_are_deleted_after_expiry(light_app, monkeypatch):
    store = light_app.extensions["privascan_store"]
    cache = light_app.config["SESSION_CACHELIB"]
    photo = jpeg_bytes(64, 48)
    tracked = []
    for index in range(1000):
        browser = Browser(light_app.test_client())  # its own cookie, its own CSRF token
        assert browser.upload((photo, f"p{index}.jpg")).status_code == 200
        if index % 100 == 0:
            (kept,) = [p for d in store._sessions.values() for p in d.photos.values() if p.name == f"p{index}.jpg"]
            tracked.append(weakref.ref(kept))
            del kept
    assert len(store) == 1000
    assert store.total_bytes() > 1000 * 1000
    assert len(cache) >= 1000  # one server-side session entry per browser

    real_clock = store._clock
    monkeypatch.setattr(store, "_clock", lambda: real_clock() + light_app.config["SESSION_IDLE_MINUTES"] * 60 + 5)
    monkeypatch.setattr(webapp.sessions, "SWEEP_EVERY_SECONDS", 0)  # the next request sweeps
    latecomer = light_app.test_client().get("/")
    assert latecomer.status_code == 200

    assert len(store) == 0 and store.total_bytes() == 0
    # Nothing is left in the session cache (the latecomer only read a page, which stores nothing).
    assert len(cache) == 0
    gc.collect()
    assert all(ref() is None for ref in tracked)  # the photo bytes themselves are gone


def newcomer_saves_a_setting(app) -> int:
    """A new browser that stores something (a setting): the kind of visit that needs a server-side entry."""
    return Browser(app.test_client()).post("/settings", data={"app": "dermatology"}).status_code


def test_a_flood_of_new_visitors_logs_nobody_out(tiny_model_dir):
    app = make_app(tiny_model_dir, LOAD_MODELS_AT_START=False, MAX_VISITORS=40, MAX_SESSIONS=10)
    me = Browser(app.test_client())
    me.upload((photo_bytes(1), "mine.jpg"))
    (photo_id,) = me.photo_ids()
    answers = [newcomer_saves_a_setting(app) for _ in range(60)]  # a script making sessions
    assert answers.count(200) == 39 and answers.count(503) == 21
    refused = Browser(app.test_client()).post("/settings", data={"app": "dermatology"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    assert "serving as many people as it can" in words(refused)
    # My session was not evicted to make room: same photo, same token still accepted.
    assert me.photo_ids() == [photo_id]
    assert me.post(f"/photos/{photo_id}/date", data={"taken_on": "2021-02-03"}).status_code == 200
    # Reading pages needs no entry, so newcomers still get them; static files and the stateless API too.
    assert app.test_client().get("/").status_code == 200
    assert app.test_client().get("/static/app.css").status_code == 200
    assert app.test_client().post("/api/analyze", **multipart([("image", (b"", "x.jpg"))])).status_code == 400
    app.extensions["privascan_worker"].stop()


def test_newcomers_are_served_again_once_old_visitors_expire(tiny_model_dir, monkeypatch):
    app = make_app(tiny_model_dir, LOAD_MODELS_AT_START=False, MAX_VISITORS=5, MAX_SESSIONS=5)
    for _ in range(5):
        assert newcomer_saves_a_setting(app) == 200
    assert newcomer_saves_a_setting(app) == 503
    later = time.time() + app.config["SESSION_IDLE_MINUTES"] * 60 + 5
    monkeypatch.setattr("cachelib.simple.time", lambda: later)
    monkeypatch.setattr(webapp.sessions.time, "time", lambda: later)
    assert newcomer_saves_a_setting(app) == 200
    app.extensions["privascan_worker"].stop()


def test_the_memory_for_all_sessions_together_is_capped(tiny_model_dir):
    app = make_app(tiny_model_dir, LOAD_MODELS_AT_START=False)
    assert app.config["MAX_TOTAL_BYTES"] < app.config["MAX_SESSIONS"] * app.config["MAX_SESSION_BYTES"]
    store = app.extensions["privascan_store"]
    first, second = Browser(app.test_client()), Browser(app.test_client())
    assert first.upload((photo_bytes(2), "a.jpg"), (photo_bytes(3), "b.jpg")).status_code == 200
    store.max_total_bytes = cap = store.total_bytes() + 1000  # full now, as a busy clinic's server would be
    response = second.upload((photo_bytes(4), "c.jpg"))
    assert response.status_code == 503
    assert "memory for photos is full" in words(response) and "try again" in words(response)
    assert store.total_bytes() <= cap
    assert len(first.photo_ids()) == 2  # nobody else's photos were dropped to make room
    app.extensions["privascan_worker"].stop()
