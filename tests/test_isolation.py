"""Isolation beyond test_views.py: every picture and download route, and replaying a cleared session's cookie.

test_views.py covers reading, deleting, analysing and re-dating another
session's photo and an expired cookie; test_live.py covers the live alert
log. Here: the remaining routes that carry a photo's data (extra heatmaps,
the located photo, asking for a heatmap) and what an old cookie finds after
"Clear session": nothing, with a 404 for each photo and a fresh session.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import Browser, photo_bytes


@pytest.fixture
def analysed(app, browser):
    """A session with one analysed photo and a second heatmap; returns (photo id, condition id)."""
    browser.upload((photo_bytes(200), "mine.jpg"))
    (photo_id,) = browser.photo_ids()
    browser.post(f"/photos/{photo_id}/analyze")
    assert app.extensions["privascan_worker"].join_idle(120)
    card = browser.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    condition = re.search(r'/photos/[^/]+/explain/([a-z_]+)"', card).group(1)
    assert browser.post(f"/photos/{photo_id}/explain/{condition}").status_code == 200
    assert app.extensions["privascan_worker"].join_idle(120)
    assert browser.get(f"/photos/{photo_id}/heatmap/{condition}.png").status_code == 200
    return photo_id, condition


def owner_routes(photo_id: str, condition: str) -> tuple[list[str], list[str]]:
    gets = [f"/photos/{photo_id}/{path}" for path in
            ("card", "thumbnail.jpg", "photo.jpg", "crop.jpg", "heatmap.png", f"heatmap/{condition}.png", "located.jpg")]
    posts = [f"/photos/{photo_id}/{path}" for path in ("analyze", "delete", "date", f"explain/{condition}")]
    return gets, posts


def test_another_session_gets_404_from_every_route_of_my_photo(app, browser, analysed):
    photo_id, condition = analysed
    gets, posts = owner_routes(photo_id, condition)
    for path in gets:
        assert browser.get(path).status_code == 200, path  # they exist for the owner
    intruder = Browser(app.test_client())
    for path in gets:
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "text/html" and b"\xff\xd8" not in response.data and b"PNG" not in response.data
    for path in posts:
        assert intruder.post(path, data={"taken_on": "2020-01-01"}).status_code == 404, path
    worker = app.extensions["privascan_worker"]
    assert worker.pending() == 0  # the intruder queued nothing on my photo
    assert browser.photo_ids() == [photo_id]
    assert browser.get(f"/photos/{photo_id}/heatmap/{condition}.png").status_code == 200


def test_another_sessions_live_scan_cannot_be_explained_or_fed(app, browser):
    if "live.explain" not in app.view_functions:
        pytest.skip("no live scan in this build")
    assert browser.post("/live/start").status_code == 200
    intruder = Browser(app.test_client())
    assert intruder.post("/live/explain").status_code == 410
    assert intruder.post("/live/frame", data={}).status_code == 410


def test_replaying_a_cleared_sessions_cookie_finds_nothing(app, browser, analysed):
    photo_id, condition = analysed
    old_cookie = browser.client.get_cookie("privascan_session").value
    old_token = browser.token
    response = browser.post("/session/clear")
    assert response.status_code == 200
    after = browser.client.get_cookie("privascan_session")
    assert after is None or after.value != old_cookie  # no session at all (nothing left in it), or a new id
    store = app.extensions["privascan_store"]
    assert len(store) == 0  # deleted on the server at once

    first_visit = app.test_client()
    first_visit.set_cookie("privascan_session", old_cookie)
    page = first_visit.get("/").get_data(as_text=True)
    assert photo_id not in page and "mine.jpg" not in page
    assert "previous session ended" in page

    replay = app.test_client()
    replay.set_cookie("privascan_session", old_cookie)
    gets, posts = owner_routes(photo_id, condition)
    for path in gets:
        assert replay.get(path, headers={"HX-Request": "true"}).status_code == 404, path
    for path in posts:  # even with the old page's token: that session is gone, its token with it
        status = replay.post(path, headers={"X-CSRF-Token": old_token, "HX-Request": "true"},
                             data={"taken_on": "2020-01-01"}).status_code
        assert status in (403, 404, 410), (path, status)
    if "live.log_json_download" in app.view_functions:
        assert replay.get("/live/log.json").get_json()["count"] == 0
    assert len(store) == 0  # replaying created nothing either
