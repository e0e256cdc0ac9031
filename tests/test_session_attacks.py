"""Session attacks from the attack on the production setup (issue 13), each reproduced here.

- Fixation: an attacker who planted a real session id X in a victim's browser
  must not see the victim's photos through X once the victim uploads.
- Visitor flood: 10,100 cookie-less ``GET /nope`` in a row filled the
  10,000-visitor table and every newcomer then got 503; requests that store
  nothing now create no server-side entry at all.
- With Secure cookies, every cookie carries the ``__Host-`` prefix.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import Browser, photo_bytes

COOKIE = "privascan_session"


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def attacker_with_a_real_session(app) -> tuple[Browser, str]:
    """An attacker who made the server issue a session (by saving a setting) and kept its id."""
    attacker = Browser(app.test_client())
    assert attacker.post("/settings", data={"app": "dermatology"}).status_code == 200
    planted = attacker.client.get_cookie(COOKIE).value
    return attacker, planted


def fixation(app):
    attacker, planted = attacker_with_a_real_session(app)
    victim_client = app.test_client()
    victim_client.set_cookie(COOKIE, planted)  # planted in the victim's browser (a shared kiosk, an XSS elsewhere...)
    victim = Browser(victim_client)
    assert victim.upload((photo_bytes(40), "victim-arm.jpg")).status_code == 200
    (photo_id,) = victim.photo_ids()
    assert victim.client.get_cookie(COOKIE).value != planted  # the first data gave the session a new id

    thief = app.test_client()
    thief.set_cookie(COOKIE, planted)
    for secret_cookie in ("privascan_key",):  # scale-out mode: even with the victim's key cookie
        stolen = victim.client.get_cookie(secret_cookie)
        if stolen is not None:
            thief.set_cookie(secret_cookie, stolen.value)
    page = thief.get("/").get_data(as_text=True)
    assert "victim-arm.jpg" not in page and photo_id not in page
    for path in ("photo.jpg", "thumbnail.jpg", "card"):
        assert thief.get(f"/photos/{photo_id}/{path}", headers={"HX-Request": "true"}).status_code == 404
    # The victim keeps working in the new session.
    assert victim.photo_ids() == [photo_id]
    assert victim.post(f"/photos/{photo_id}/date", data={"taken_on": "2022-02-02"}).status_code == 200


def test_a_planted_session_id_never_sees_the_victims_photos(app_factory):
    fixation(app_factory(LOAD_MODELS_AT_START=False))


def test_a_planted_session_id_never_sees_the_victims_photos_in_scale_out_mode(app_factory, tiny_model_dir, redis_url):
    from tests.test_redis_mode import redis_app

    fixation(app_factory.adopt(redis_app(tiny_model_dir, redis_url)))


def test_starting_a_live_scan_also_gives_a_new_session_id(app_factory):
    app = app_factory()
    attacker, planted = attacker_with_a_real_session(app)
    victim_client = app.test_client()
    victim_client.set_cookie(COOKIE, planted)
    victim = Browser(victim_client)
    assert victim.post("/live/start").status_code == 200
    assert victim.client.get_cookie(COOKIE).value != planted


def test_the_visitor_table_holds_ten_thousand_by_default(app_factory):
    assert app_factory(LOAD_MODELS_AT_START=False).config["MAX_VISITORS"] == 10_000


def test_more_cookie_less_requests_than_the_visitor_table_holds_create_nothing_and_lock_nobody_out(app_factory):
    # A table of 1,000 (the default is 10,000) and 1,100 requests: the same overflow, a tenth of the time.
    app = app_factory(LOAD_MODELS_AT_START=False, MAX_VISITORS=1_000)
    cache = app.config["SESSION_CACHELIB"]
    me = Browser(app.test_client())
    me.upload((photo_bytes(41), "mine.jpg"))
    assert len(cache) == 1
    script = app.test_client(use_cookies=False)
    statuses = {}
    for index in range(1_100):
        path = "/nope" if index % 2 else "/"
        status = script.get(path).status_code
        statuses[(path, status)] = statuses.get((path, status), 0) + 1
    print("1,100 cookie-less requests:", statuses, "server-side entries:", len(cache))
    assert statuses == {("/nope", 404): 550, ("/", 200): 550}
    assert len(cache) == 1  # still only mine
    newcomer = Browser(app.test_client())
    assert newcomer.upload((photo_bytes(42), "new.jpg")).status_code == 200
    assert len(newcomer.photo_ids()) == 1 and len(me.photo_ids()) == 1


def test_a_page_view_sets_no_session_cookie_only_the_csrf_cookie(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    response = app.test_client().get("/")
    cookies = response.headers.getlist("Set-Cookie")
    assert [c.split("=", 1)[0] for c in cookies] == ["privascan_csrf"]
    assert "HttpOnly" in cookies[0] and "SameSite=Lax" in cookies[0] and "Path=/" in cookies[0]
    assert len(app.config["SESSION_CACHELIB"]) == 0


def test_the_csrf_token_works_across_requests_without_any_server_state(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False)
    browser = Browser(app.test_client())
    assert len(app.config["SESSION_CACHELIB"]) == 0
    assert browser.post("/settings", data={"app": "dermatology"}).status_code == 200
    # Another browser's token, or my token without my cookie, is refused.
    other = Browser(app.test_client())
    assert other.token != browser.token
    stranger = app.test_client()
    refused = stranger.post("/settings", data={"app": "dermatology", "csrf_token": browser.token})
    assert refused.status_code == 403 and "out of date" in words(refused)


@pytest.mark.parametrize("secure", [True, False])
def test_cookies_carry_the_host_prefix_when_secure(app_factory, secure):
    app = app_factory(LOAD_MODELS_AT_START=False, SESSION_COOKIE_SECURE=secure)
    client = app.test_client()
    base = "https://localhost" if secure else "http://localhost"
    page = client.get("/", base_url=base)
    token = re.search(r'"X-CSRF-Token": "([^"]+)"', page.get_data(as_text=True)).group(1)
    from tests.helpers import multipart

    upload = client.post("/photos", base_url=base, headers={"X-CSRF-Token": token, "HX-Request": "true"},
                         **multipart([("photos", (photo_bytes(43), "a.jpg"))]))
    assert upload.status_code == 200, words(upload)
    names = {c.split("=", 1)[0]: c for c in page.headers.getlist("Set-Cookie") + upload.headers.getlist("Set-Cookie")}
    prefix = "__Host-" if secure else ""
    assert {f"{prefix}privascan_csrf", f"{prefix}privascan_session"} <= set(names), names
    for cookie in names.values():
        assert "Domain=" not in cookie and "Path=/" in cookie and "HttpOnly" in cookie
        assert ("Secure" in cookie) is secure
