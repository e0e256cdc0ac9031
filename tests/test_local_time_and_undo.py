"""Issue 16's server side: the user's time zone, Undo's shelf, the plain status line, explain refusals in place.

The behaviour in the page is in tests/test_ux_browser.py; these check what
the server does with what the page sends, through the Flask test client.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

from tests.helpers import Browser, photo_bytes
from webapp import create_app
from webapp.local_time import valid_zone_name
from webapp.undo import UndoShelf


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def test_only_real_zone_names_are_accepted():
    assert valid_zone_name("America/New_York") == "America/New_York"
    assert valid_zone_name("UTC") == "UTC"
    for bad in ("", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "x" * 80, None):
        assert valid_zone_name(bad) is None


def test_the_zone_is_remembered_for_plain_links_and_exports_use_it(app_factory):
    app = app_factory()
    browser = Browser(app.test_client())
    bank = app.extensions["privascan_registry"].banks["dermatology"]
    form = {f"threshold_{c.id}": "0" if c.id == "melanoma" else "1" for c in bank.conditions}
    response = browser.post("/live/thresholds", data=form)
    assert response.status_code == 200
    assert "Melanoma 0 (0 %)" in words(response)
    assert browser.post("/live/start").status_code == 200
    from tests.test_live import frame_jpeg, post_frame

    # The frames carry the zone, as live.js sends them; then a plain GET (a download link sends no header) uses it.
    plain_headers = browser.headers
    browser.headers = lambda htmx=True: {**plain_headers(htmx), "X-Time-Zone": "Asia/Kolkata"}
    for seed in range(3):
        assert post_frame(browser, frame_jpeg(seed)).status_code == 200
    browser.headers = plain_headers
    rows = list(csv.DictReader(io.StringIO(browser.get("/live/log.csv", htmx=False).get_data(as_text=True))))
    assert rows and rows[0]["time_zone"] == "Asia/Kolkata" and rows[0]["raised_at"].endswith("+05:30")
    assert rows[0]["frames"] == "3" and "over the last 3 frames" in rows[0]["explanation"]
    body = browser.get("/live/log.json", htmx=False).get_json()
    assert body["time_zone"] == "Asia/Kolkata" and body["generated_at"].endswith("+05:30")
    # A made-up zone is ignored, the remembered one stays.
    page = browser.client.get("/live", headers={"X-Time-Zone": "Mars/Olympus"}).get_data(as_text=True)
    assert "Time (Asia/Kolkata)" in page


def test_an_empty_or_future_date_is_refused_naming_the_photo(app_factory):
    browser = Browser(app_factory().test_client())
    browser.upload((photo_bytes(1), "named.jpg"))
    (photo_id,) = browser.photo_ids()
    empty = browser.post(f"/photos/{photo_id}/date", data={"taken_on": ""})
    assert empty.status_code == 400 and "“named.jpg”: the date taken was empty" in words(empty)
    kiribati_today = dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()
    ahead = browser.client.post(f"/photos/{photo_id}/date", data={"taken_on": kiribati_today.isoformat()},
                                headers={**browser.headers(), "X-Time-Zone": "Pacific/Kiritimati"})
    assert ahead.status_code == 200  # the user's today is never "in the future"
    later = browser.client.post(f"/photos/{photo_id}/date", data={"taken_on": (kiribati_today + dt.timedelta(days=1)).isoformat()},
                                headers={**browser.headers(), "X-Time-Zone": "Pacific/Kiritimati"})
    assert later.status_code == 400 and "“named.jpg”" in words(later)


def test_undo_expires_and_clear_session_drops_the_shelved_photo(app_factory):
    app = app_factory()
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(2), "gone.jpg"), (photo_bytes(3), "kept.jpg"))
    gone = browser.photo_ids()[0]
    clock = [1000.0]
    app.extensions["privascan_undo"] = UndoShelf(seconds=20, clock=lambda: clock[0])
    deleted = browser.post(f"/photos/{gone}/delete")
    assert "Undo is possible for 20 seconds" in words(deleted)
    assert gone not in browser.photo_ids()
    clock[0] += 21
    late = browser.post("/photos/undo-delete", data={"photo_id": gone})
    assert late.status_code == 410 and "can no longer be brought back" in words(late)
    assert len(app.extensions["privascan_undo"]) == 0  # swept, not just refused
    kept = browser.photo_ids()[0]
    browser.post(f"/photos/{kept}/delete")
    assert len(app.extensions["privascan_undo"]) == 1
    browser.post("/session/clear")
    assert len(app.extensions["privascan_undo"]) == 0  # nothing of the session is left


def test_cold_start_says_what_it_is_doing_in_plain_words(tiny_model_dir):
    app = create_app({"TESTING": True, "MODEL": tiny_model_dir, "SESSION_COOKIE_SECURE": False,
                      "PLUGIN_ALLOWLIST": (), "LOAD_MODELS_AT_START": False})
    try:
        before = app.test_client().get("/")
        assert "Model loading: Starting up: the model will begin loading in a moment." in words(before)
        assert re.search(r'<progress max="1" value="0" aria-label="Model loading progress">', before.get_data(as_text=True))
        app.extensions["privascan_models"].start()
        app.extensions["privascan_models"].wait(120)
        response = app.test_client().get("/")
        ready = response.get_data(as_text=True)
        assert "Model ready: Photos can be analysed." in words(response)
        line = re.search(r'<p>\s*<span class="icon".*?</p>', ready, re.DOTALL).group(0)
        assert "SigLIP" not in line and "layers" not in line  # the jargon is behind "Technical details"
        assert re.search(r"<summary>Technical details</summary><p>SigLIP-compatible model", ready)
    finally:
        app.extensions["privascan_worker"].stop()


def test_explain_refusals_land_beside_the_button(app_factory):
    browser = Browser(app_factory().test_client())
    refused = browser.post("/live/explain")
    assert refused.status_code == 410
    assert "HX-Retarget" not in refused.headers  # swapped into #live-explain, where the user pressed
    assert 'class="message message-error live-explain-refusal"' in refused.get_data(as_text=True)
    assert "Press Start first" in words(refused)
    plain = browser.post("/live/explain", htmx=False)
    assert plain.status_code == 410 and "<!doctype html>" in plain.get_data(as_text=True)


def test_reports_and_exports_are_on_the_users_clock(app_factory):
    browser = Browser(app_factory().test_client())
    browser.upload((photo_bytes(4), "clock.jpg"))
    browser.client.get("/", headers={"X-Time-Zone": "America/Sao_Paulo"})
    report = words(browser.get("/report/session", htmx=False))
    assert re.search(r"Generated \d{1,2} \w+ \d{4}, \d\d:\d\d \(America/Sao_Paulo\)", report)
    body = json.loads(browser.get("/export/session.json", htmx=False).get_data(as_text=True))
    assert body["time_zone"] == "America/Sao_Paulo" and body["generated"].endswith("-03:00")


def test_undo_in_scale_out_mode_restores_the_photo_and_its_bytes(tiny_model_dir, redis_url):
    """The Redis store's photos load their bytes lazily: the shelf keeps a full copy, so Undo brings back the picture."""
    from tests.test_redis_mode import redis_app

    app = redis_app(tiny_model_dir, redis_url)
    try:
        browser = Browser(app.test_client())
        browser.upload((photo_bytes(5), "redis.jpg"))
        (photo_id,) = browser.photo_ids()
        before = browser.get(f"/photos/{photo_id}/thumbnail.jpg", htmx=False).data
        browser.post(f"/photos/{photo_id}/delete")
        assert browser.photo_ids() == []
        assert browser.get(f"/photos/{photo_id}/thumbnail.jpg", htmx=False).status_code == 404
        back = browser.post("/photos/undo-delete", data={"photo_id": photo_id})
        assert back.status_code == 200 and "“redis.jpg” is back." in words(back)
        assert browser.photo_ids() == [photo_id]
        assert browser.get(f"/photos/{photo_id}/thumbnail.jpg", htmx=False).data == before
    finally:
        app.extensions["privascan_worker"].stop()
