"""A per-client rate limit (flask-limiter, in memory): the client's address, from the proxy only when told so."""

from __future__ import annotations

import re

from tests.helpers import Browser, multipart, photo_bytes


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def limited_app(app_factory, **overrides):
    return app_factory(LOAD_MODELS_AT_START=False, RATE_LIMIT_ENABLED=True, RATE_LIMIT="20 per minute",
                       RATE_LIMIT_UPLOADS="3 per minute", **overrides)


def test_a_client_over_the_limit_gets_429_in_words_and_others_are_served(app_factory):
    app = limited_app(app_factory)
    client = app.test_client()
    statuses = [client.get("/status").status_code for _ in range(25)]
    assert statuses == [200] * 20 + [429] * 5
    refused = client.get("/", headers={"HX-Request": "true"})
    assert refused.status_code == 429 and "Too many requests from your address" in words(refused)
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["HX-Retarget"] == "#messages"  # shown in the page's message area
    assert client.get("/static/app.css").status_code == 200  # static files are not counted
    other = app.test_client()
    assert other.get("/", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_uploads_and_api_analyses_have_a_stricter_limit(app_factory):
    app = limited_app(app_factory)
    browser = Browser(app.test_client())
    answers = [browser.upload((photo_bytes(50 + i), f"p{i}.jpg")).status_code for i in range(4)]
    assert answers == [200, 200, 200, 429]
    assert len(browser.photo_ids()) == 3
    api = app.test_client()
    address = {"REMOTE_ADDR": "192.0.2.8"}
    api_answers = [api.post("/api/analyze", environ_base=address, **multipart([("image", (b"", "x.jpg"))])).status_code
                   for _ in range(4)]
    assert api_answers == [400, 400, 400, 429]
    assert api.post("/api/analyze", environ_base=address, **multipart([("image", (b"", "x.jpg"))])).get_json()["status"] == 429


def test_forwarded_for_is_ignored_unless_behind_a_proxy(app_factory):
    direct = limited_app(app_factory)
    client = direct.test_client()
    # Each request claims another address: without BEHIND_PROXY that changes nothing.
    statuses = [client.get("/status", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(21)]
    assert statuses[-1] == 429

    proxied = limited_app(app_factory, BEHIND_PROXY=True)
    client = proxied.test_client()
    statuses = [client.get("/status", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(40)]
    assert statuses == [200] * 40  # 40 different visitors behind the proxy
    same = [client.get("/status", headers={"X-Forwarded-For": "203.0.113.5"}).status_code for _ in range(21)]
    assert same[-1] == 429  # one visitor behind the proxy is still limited


def test_the_limits_are_configurable_and_on_by_default(tiny_model_dir, monkeypatch):
    from webapp.config import config_from_environment

    defaults = config_from_environment()
    assert defaults["RATE_LIMIT_ENABLED"] is True
    assert defaults["RATE_LIMIT"] == "100 per second;6000 per minute" and defaults["RATE_LIMIT_UPLOADS"] == "60 per minute"
    monkeypatch.setenv("PRIVASCAN_RATE_LIMIT", "5 per second")
    monkeypatch.setenv("PRIVASCAN_RATE_LIMIT_UPLOADS", "2 per minute")
    assert config_from_environment()["RATE_LIMIT"] == "5 per second"
    assert config_from_environment()["RATE_LIMIT_UPLOADS"] == "2 per minute"
