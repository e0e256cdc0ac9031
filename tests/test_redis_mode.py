"""Scale-out mode through the app: start-up checks, the key cookie, and Clear leaving nothing in Redis.

A real redis-server each time (tests/redis_server.py); the app is the real
one with ``REDIS_URL`` set, driven through Flask's test client.
"""

from __future__ import annotations

import re

import pytest
import redis

from tests.helpers import Browser, make_app, photo_bytes
from tests.redis_server import free_port, redis_server
from webapp.redis_store import session_key

SECRET = "s" * 64


def redis_app(tiny_model_dir, url, **overrides):
    return make_app(tiny_model_dir, REDIS_URL=url, SECRET_KEY=SECRET, LOAD_MODELS_AT_START=False, **overrides)


def test_start_up_is_refused_while_redis_snapshots_to_disk(tiny_model_dir):
    with redis_server(persistence=True) as url:
        with pytest.raises(SystemExit) as caught:
            redis_app(tiny_model_dir, url)
    message = str(caught.value)
    assert "writes its memory to disk" in message and 'set save ""' in message


def test_start_up_is_refused_with_the_append_only_file_on(tiny_model_dir):
    with redis_server("--appendonly", "yes") as url:
        with pytest.raises(SystemExit, match="set appendonly no"):
            redis_app(tiny_model_dir, url)


def test_start_up_is_refused_when_redis_cannot_be_reached(tiny_model_dir):
    with pytest.raises(SystemExit, match="cannot be reached"):
        redis_app(tiny_model_dir, f"redis://127.0.0.1:{free_port()}/0")


def test_start_up_needs_a_shared_secret_key(tiny_model_dir, redis_url):
    with pytest.raises(SystemExit, match="PRIVASCAN_SECRET_KEY"):
        make_app(tiny_model_dir, REDIS_URL=redis_url, LOAD_MODELS_AT_START=False, SECRET_KEY_GENERATED=True)


def test_a_session_in_redis_from_upload_to_clear(tiny_model_dir, redis_url):
    app = redis_app(tiny_model_dir, redis_url)
    client = redis.Redis.from_url(redis_url)
    browser = Browser(app.test_client())
    response = browser.upload((photo_bytes(1), "Mr Jones back.jpg"), (photo_bytes(2), "second.png"))
    assert response.status_code == 200
    key_cookie = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("privascan_key=")]
    assert key_cookie and "HttpOnly" in key_cookie[0] and "SameSite=Lax" in key_cookie[0]
    ids = browser.photo_ids()
    assert len(ids) == 2
    thumbnail = browser.get(f"/photos/{ids[0]}/thumbnail.jpg", htmx=False)
    assert thumbnail.status_code == 200 and thumbnail.data.startswith(b"\xff\xd8")
    assert "Mr Jones back.jpg" in browser.get("/", htmx=False).get_data(as_text=True)

    stores = [key for key in client.scan_iter("privascan:s:*")]
    assert len(stores) == 1
    assert all(b"Jones" not in value for value in client.hgetall(stores[0]).values())
    session_keys = {key for key in client.scan_iter("privascan:session:*")}

    cleared = browser.post("/session/clear")
    assert cleared.status_code == 200
    assert [h for h in cleared.headers.getlist("Set-Cookie") if h.startswith("privascan_key=;")]  # cookie dropped
    assert not client.exists(*stores)
    assert not (session_keys & set(client.scan_iter("privascan:session:*")))  # the old session dict is gone too
    assert browser.photo_ids() == []


def test_the_session_cookie_alone_opens_nothing(tiny_model_dir, redis_url):
    """A stolen session cookie without the key cookie finds no photo: the key never left the browser."""
    app = redis_app(tiny_model_dir, redis_url)
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(3), "mine.jpg"))
    (photo_id,) = browser.photo_ids()
    thief = app.test_client()
    thief.set_cookie("privascan_session", browser.client.get_cookie("privascan_session").value)
    assert thief.get(f"/photos/{photo_id}/photo.jpg").status_code == 404
    assert "mine.jpg" not in thief.get("/").get_data(as_text=True)


def test_date_changes_are_kept_in_redis(tiny_model_dir, redis_url):
    app = redis_app(tiny_model_dir, redis_url)
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(4), "a.jpg"))
    (photo_id,) = browser.photo_ids()
    assert browser.post(f"/photos/{photo_id}/date", data={"taken_on": "2023-05-06"}).status_code == 200
    assert "Saturday 6 May 2023" in browser.get("/", htmx=False).get_data(as_text=True)


def test_redis_lost_while_running_is_a_503_and_recovers(tiny_model_dir):
    port = free_port()
    with redis_server(port=port) as url:
        app = redis_app(tiny_model_dir, url)
        browser = Browser(app.test_client())
        browser.upload((photo_bytes(5), "a.jpg"))
    # That redis-server has stopped: the page says so, politely, with no traceback.
    page = browser.get("/", htmx=False)
    assert page.status_code == 503
    text = re.sub(r"<[^>]+>", " ", page.get_data(as_text=True))
    assert "unavailable" in text and "Traceback" not in text
    assert page.headers["Retry-After"]
    assert browser.client.post("/session/clear", headers={"X-CSRF-Token": browser.token}).status_code == 503
    with redis_server(port=port):  # Redis is back (empty, as after any restart): served again, a fresh session
        page = browser.get("/", htmx=False)
        assert page.status_code == 200
        assert "previous session ended" in page.get_data(as_text=True)
