"""SessionStore: caps, isolation by id, and deletion (not hiding) on expiry."""

from __future__ import annotations

import datetime as dt
import gc
import weakref

import pytest

from webapp.store import Photo, SessionStore, StoreFull


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def make_store(clock=None, **caps) -> SessionStore:
    settings = dict(idle_seconds=1800, lifetime_seconds=12 * 3600, max_sessions=10, max_photos=3, max_bytes=10_000)
    settings.update(caps)
    return SessionStore(clock=clock or Clock(), **settings)


def make_photo(photo_id: str, size: int = 100, digest: str | None = None) -> Photo:
    return Photo(
        id=photo_id, digest=digest or photo_id, name=f"{photo_id}.jpg", jpeg=bytes(size), thumbnail=b"",
        width=10, height=10, taken_on=dt.date(2024, 1, 1), date_source="upload day",
    )


def test_ids_are_unguessable_and_distinct():
    store = make_store()
    ids = {store.create().id for _ in range(10)}
    assert len(ids) == 10
    assert all(len(i) >= 20 for i in ids)


def test_photo_cap_and_byte_cap():
    store = make_store()
    data = store.create()
    for index in range(3):
        store.add_photo(data, make_photo(f"p{index}"))
    with pytest.raises(StoreFull, match="3 photos"):
        store.add_photo(data, make_photo("p4"))
    other = store.create()
    with pytest.raises(StoreFull, match="memory"):
        store.add_photo(other, make_photo("big", size=20_000))
    assert len(other.photos) == 0


def test_session_cap_answers_busy():
    store = make_store(max_sessions=2)
    store.create()
    store.create()
    with pytest.raises(StoreFull) as caught:
        store.create()
    assert caught.value.status == 503


def test_idle_and_absolute_expiry_delete_the_data():
    clock = Clock()
    store = make_store(clock)
    idle = store.create()
    store.add_photo(idle, make_photo("a"))
    busy = store.create()
    clock.now += 1000
    assert store.get(busy.id) is busy  # touching keeps it alive
    clock.now += 1000  # idle: 2000 s > 1800 s; busy: 1000 s since last seen
    assert store.get(idle.id) is None
    assert idle.photos == {}  # the bytes were dropped, not just the index
    assert store.get(busy.id) is busy
    clock.now += 12 * 3600  # absolute lifetime beats activity
    assert store.sweep() == 1
    assert len(store) == 0


def test_thousand_sessions_empty_after_expiry_and_memory_is_freed():
    clock = Clock()
    store = make_store(clock, max_sessions=2000, max_photos=5, max_bytes=10**9)
    tracker = []
    for index in range(1000):
        data = store.create()
        photo = make_photo(f"{index}", size=2048)
        store.add_photo(data, photo)
        tracker.append(weakref.ref(photo))
        del photo
    assert len(store) == 1000
    assert store.total_bytes() == 1000 * 2048
    clock.now += 1801
    assert store.sweep() == 1000
    gc.collect()
    assert len(store) == 0 and store.total_bytes() == 0
    assert all(ref() is None for ref in tracker)  # nothing keeps a photo alive


def test_update_photo_after_deletion_is_a_no_op():
    store = make_store()
    data = store.create()
    store.add_photo(data, make_photo("x"))
    store.delete(data.id)
    assert store.update_photo(data.id, "x", state="done") is False
    assert store.get_photo(data.id, "x") is None


def test_one_session_cannot_reach_another_sessions_photo():
    store = make_store()
    mine, theirs = store.create(), store.create()
    store.add_photo(theirs, make_photo("secret"))
    assert store.get_photo(mine.id, "secret") is None
    assert store.get_photo("guessed-id", "secret") is None
    assert store.get_photo(theirs.id, "secret").name == "secret.jpg"


def test_duplicates_are_found_by_digest():
    store = make_store()
    data = store.create()
    store.add_photo(data, make_photo("a", digest="same"))
    assert store.find_duplicate(data, "same").id == "a"
    assert store.find_duplicate(data, "other") is None


def test_a_cap_on_all_sessions_together():
    store = make_store(max_total_bytes=250)
    first, second = store.create(), store.create()
    store.add_photo(first, make_photo("a", size=100))
    store.add_photo(second, make_photo("b", size=100))
    with pytest.raises(StoreFull) as caught:
        store.add_photo(second, make_photo("c", size=100))  # within its own cap, over the server's
    assert caught.value.status == 503 and "memory for photos is full" in caught.value.message
    store.delete(first.id)
    store.add_photo(second, make_photo("c", size=100))  # room again once a session has gone
