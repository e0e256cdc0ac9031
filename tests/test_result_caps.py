"""Every byte a session keeps counts in its caps: results, extra heatmaps, live state, decodes in flight (issue 13).

The attack found a 96x96 photo counted 12.8 KB while its crop and heatmap
added 411 KB and extra heatmaps 3.5 MB more, none of it checked against the
caps. Here the real app (tiny model, real localizer, crop and Grad-CAM)
analyses photos and the store's own figures are compared with the bytes it
holds.
"""

from __future__ import annotations

import re
import threading

import pytest

from tests.helpers import Browser, multipart, photo_bytes
from webapp.pipeline import heatmap_allowance, result_allowance
from webapp.worker import Job


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def wait_for_worker(app):
    assert app.extensions["privascan_worker"].join_idle(120)


def only_session(app):
    (data,) = app.extensions["privascan_store"]._sessions.values()
    return data


def held_worker(app):
    """Occupy the worker so that queued jobs stay queued; set() the event to let it go."""
    gate = threading.Event()
    app.extensions["privascan_worker"].submit(Job("hold", lambda: gate.wait(60)))
    return gate


def test_a_result_and_its_extra_heatmaps_count_in_the_session_and_the_total(app_factory):
    app = app_factory()
    store = app.extensions["privascan_store"]
    browser = Browser(app.test_client())
    assert browser.upload((photo_bytes(11), "a.jpg")).status_code == 200
    data = only_session(app)
    (photo,) = data.photos.values()
    stored = len(photo.jpeg) + len(photo.thumbnail)
    assert data.size_bytes == stored

    assert browser.post(f"/photos/{photo.id}/analyze", data={"analyse_anyway": "1"}).status_code == 200
    wait_for_worker(app)
    result = photo.result
    assert result is not None and result.heatmap_png and result.crop_jpeg
    result_bytes = len(result.crop_jpeg) + len(result.heatmap_png) + result.scores.embedding.nbytes
    assert photo.pending == {}  # the claimed room was given back once the real bytes were in
    assert data.size_bytes == stored + result_bytes == store.total_bytes()
    print(f"photo {stored} B, its result {result_bytes} B (crop {len(result.crop_jpeg)}, heatmap {len(result.heatmap_png)})")

    card = browser.get(f"/photos/{photo.id}/card").get_data(as_text=True)
    runner_up = re.search(r'/photos/[^/]+/explain/([a-z_]+)"', card).group(1)
    assert browser.post(f"/photos/{photo.id}/explain/{runner_up}").status_code == 200
    wait_for_worker(app)
    extra = len(photo.extra_heatmaps[runner_up])
    assert data.size_bytes == stored + result_bytes + extra == store.total_bytes()
    assert extra <= heatmap_allowance(448) and len(result.heatmap_png) + len(result.crop_jpeg) <= result_allowance(448)

    # Full: room for the photo and its results, not for one more heatmap. Refused in words, nothing queued.
    store.max_bytes = data.size_bytes + 1000
    another = next(c for c in result.scores.condition_ids if c not in (runner_up, result.heatmap_condition_id))
    refused = browser.post(f"/photos/{photo.id}/explain/{another}")
    assert refused.status_code == 413
    assert "Its result would need about 1 MB of memory, more than this session has left" in words(refused)
    assert app.extensions["privascan_worker"].pending() == 0 and another not in photo.extra_heatmaps
    assert photo.pending == {}


def test_queued_analyses_claim_room_so_the_queue_cannot_overshoot_the_cap(app_factory):
    app = app_factory()
    store = app.extensions["privascan_store"]
    browser = Browser(app.test_client())
    assert browser.upload((photo_bytes(12), "a.jpg"), (photo_bytes(13), "b.jpg")).status_code == 200
    data = only_session(app)
    first, second = data.photos.values()
    store.max_bytes = data.size_bytes + result_allowance(448) + 1000  # room for one result, not two
    gate = held_worker(app)
    try:
        assert browser.post(f"/photos/{first.id}/analyze").status_code == 200
        assert first.pending == {"analyse": result_allowance(448)}
        refused = browser.post(f"/photos/{second.id}/analyze")
        assert refused.status_code == 413 and "Its result would need about" in words(refused)
        assert second.state == "new" and second.pending == {}
    finally:
        gate.set()
    wait_for_worker(app)
    assert first.state == "done" and first.pending == {}
    assert data.size_bytes <= store.max_bytes


def test_the_total_cap_counts_results_of_every_session(app_factory):
    app = app_factory()
    store = app.extensions["privascan_store"]
    first, second = Browser(app.test_client()), Browser(app.test_client())
    first.upload((photo_bytes(14), "a.jpg"))
    second.upload((photo_bytes(15), "b.jpg"))
    (mine,) = first.photo_ids()
    store.max_total_bytes = store.total_bytes() + result_allowance(448) // 2  # not even one result's room left
    refused = first.post(f"/photos/{mine}/analyze")
    assert refused.status_code == 503 and "memory for photos is full" in words(refused)
    assert refused.headers["Retry-After"] == "30"


def test_live_state_counts_in_the_session(app_factory):
    from webapp.live import LiveState

    app = app_factory(LOAD_MODELS_AT_START=False)
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(16), "a.jpg"))
    data = only_session(app)
    before = data.size_bytes
    data.live = LiveState("dermatology")
    data.live.keep_crop(b"\xff\xd8" + b"c" * 50_000, "clinical")
    assert data.size_bytes == before + 50_002
    assert app.extensions["privascan_store"].total_bytes() == before + 50_002


def test_decodes_in_flight_count_in_the_caps(app_factory):
    """While one decode holds its reservation, another upload sees the session's room taken."""
    app = app_factory(LOAD_MODELS_AT_START=False)
    store = app.extensions["privascan_store"]
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(17), "a.jpg"))
    data = only_session(app)
    free = store.max_bytes - data.size_bytes
    with store.reserve(data, free - 1000):
        assert data.size_bytes == store.max_bytes - 1000 and store.total_bytes() == data.size_bytes
        refused = browser.upload((photo_bytes(18), "b.jpg"))
        assert refused.status_code == 413
        assert "Decoding this photo would need about" in words(refused)
    assert browser.upload((photo_bytes(18), "b.jpg")).status_code == 200  # the room is back afterwards
