"""Scale-out mode's session store against a real redis-server: sealed, bounded, deleted on time.

No mock anywhere: each test talks to Debian's redis-server on a loopback port
with persistence off (tests/redis_server.py). What Redis holds is read back
raw, as an attacker with a memory dump would, to show it is ciphertext.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis

from tests.redis_server import redis_server
from webapp.redis_store import INDEX_KEY, RedisSessionStore, session_key
from webapp.session_crypto import new_key
from webapp.store import Photo, StoreFull

JPEG_MAGIC = b"\xff\xd8\xff"


def make_store(url: str, **caps) -> RedisSessionStore:
    settings = dict(idle_seconds=1800, lifetime_seconds=12 * 3600, max_sessions=10, max_photos=3, max_bytes=50_000)
    settings.update(caps)
    return RedisSessionStore(redis.Redis.from_url(url), **settings)


def make_photo(photo_id: str, size: int = 100, name: str | None = None) -> Photo:
    return Photo(
        id=photo_id, digest="d-" + photo_id, name=name or f"{photo_id}.jpg", jpeg=JPEG_MAGIC + bytes(size),
        thumbnail=JPEG_MAGIC + b"THUMBNAIL-PIXELS", width=10, height=10, taken_on=dt.date(2024, 1, 1), date_source="upload day",
    )


def raw_values(client: redis.Redis) -> list[bytes]:
    """Every byte Redis holds under PrivaScan's keys, as a dump would show them."""
    values = []
    for key in client.scan_iter("privascan:*"):
        kind = client.type(key)
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                values += [field, value]
        elif kind == b"string":
            values.append(client.get(key))
        elif kind == b"zset":
            values += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return values


def test_photos_round_trip_and_redis_holds_only_ciphertext(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1", name="Ms Smith mole.jpg"))
    again = store.get(data.id, secret=data.secret)
    photo = again.photos["p1"]
    assert photo.name == "Ms Smith mole.jpg"
    assert photo.jpeg == JPEG_MAGIC + bytes(100)
    assert photo.thumbnail.endswith(b"THUMBNAIL-PIXELS")
    dump = b"".join(raw_values(store.client))
    assert b"Smith" not in dump and b"THUMBNAIL-PIXELS" not in dump and b"d-p1" not in dump
    assert data.secret not in dump  # the key is the browser's, never Redis's


def test_another_key_opens_nothing(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    assert store.get(data.id, secret=new_key()) is None
    assert store.get(data.id, secret=None) is None
    assert store.get_photo(data.id, "p1", secret=new_key()) is None
    other = store.create()
    assert store.get(other.id, secret=data.secret) is None  # a key only opens its own session
    assert store.get(data.id, secret=data.secret).photos["p1"].jpeg.startswith(JPEG_MAGIC)


def test_a_value_moved_to_another_session_does_not_open(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    # Same key on purpose: the associated data (session id and field) still refuses it.
    twin = store.create()
    store.client.hset(session_key(twin.id), "keycheck", store.client.hget(session_key(data.id), "keycheck"))
    assert store.get(twin.id, secret=data.secret) is None


def test_caps_on_photos_bytes_and_sessions(redis_url):
    store = make_store(redis_url, max_sessions=2)
    data = store.create()
    for index in range(3):
        store.add_photo(data, make_photo(f"p{index}"))
    with pytest.raises(StoreFull, match="3 photos"):
        store.add_photo(data, make_photo("p4"))
    other = store.create()
    with pytest.raises(StoreFull, match="memory"):
        store.add_photo(other, make_photo("big", size=60_000))
    with pytest.raises(StoreFull) as caught:
        store.create()
    assert caught.value.status == 503
    assert len(store) == 2


def test_clear_deletes_every_key_at_once(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    store.update_photo(data.id, "p1", secret=data.secret, state="done", extra_heatmaps={"nevus": b"png"})
    store.delete(data.id)
    assert [key for key in store.client.scan_iter("privascan:*")] == []
    assert store.get(data.id, secret=data.secret) is None


def test_idle_timeout_is_a_redis_ttl_that_deletes(redis_url):
    store = make_store(redis_url, idle_seconds=1)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    key = session_key(data.id)
    assert 0 < store.client.ttl(key) <= 1
    time.sleep(2.2)
    assert not store.client.exists(key)  # Redis itself deleted the photo, not just hid it
    assert store.get(data.id, secret=data.secret) is None
    assert store.sweep() == 1 and store.client.zcard(INDEX_KEY) == 0


def test_use_refreshes_the_ttl_but_never_past_the_absolute_lifetime(redis_url):
    store = make_store(redis_url, idle_seconds=60, lifetime_seconds=3)
    data = store.create()
    key = session_key(data.id)
    assert store.client.ttl(key) <= 3
    time.sleep(1.1)
    store.get(data.id, secret=data.secret)
    assert store.client.ttl(key) <= 2
    store = make_store(redis_url, idle_seconds=30)
    data = store.create()
    store.client.expire(session_key(data.id), 5)
    store.get(data.id, secret=data.secret)  # touching restores the full idle timeout
    assert store.client.ttl(session_key(data.id)) > 25


def test_a_write_after_deletion_does_not_resurrect_the_session(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    store.delete(data.id)
    assert store.update_photo(data.id, "p1", secret=data.secret, state="done") is False
    with pytest.raises(StoreFull):
        store.add_photo(data, make_photo("p2"))
    assert not store.client.exists(session_key(data.id))


def test_worker_style_updates_and_remove(redis_url):
    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    store.add_photo(data, make_photo("p2"))
    assert store.update_photo(data.id, "p1", secret=data.secret, state="running", stage="classifying")
    photo = store.get_photo(data.id, "p1", secret=data.secret)
    assert (photo.state, photo.stage) == ("running", "classifying")
    assert store.update_photo(data.id, "nope", secret=data.secret, state="done") is False
    assert store.remove_photo(data, "p1") is True
    assert list(store.get(data.id, secret=data.secret).photos) == ["p2"]
    assert not any(name.startswith(b"photo:p1:") for name in store.client.hkeys(session_key(data.id)))


def test_redis_out_of_memory_is_a_polite_503():
    with redis_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as url:
        store = make_store(url, max_sessions=100, max_photos=100, max_bytes=100 * 1024 * 1024)
        data = store.create()
        with pytest.raises(StoreFull) as caught:
            for index in range(100):
                store.add_photo(data, make_photo(f"p{index}", size=200_000))
        assert caught.value.status == 503 and "memory" in caught.value.message
        assert store.get(data.id, secret=data.secret) is not None  # what was stored is still readable


def test_lesions_and_declined_matches_are_kept_sealed_and_shared_by_replicas(redis_url):
    """A lesion made on one replica is seen, changed and forgotten on another; Redis holds only ciphertext."""
    from webapp import lesions

    one, other = make_store(redis_url), make_store(redis_url)  # two web replicas' stores, one Redis
    data = one.create()
    for photo_id in ("p1", "p2", "p3"):
        one.add_photo(data, make_photo(photo_id))
    lesion = lesions.new_lesion(one, data, ["p1"], name="Left shoulder mole", site_id="shoulder")
    lesions.decline(one, data, "p3", "photo:p1")

    seen = other.get(data.id, secret=data.secret)
    assert list(seen.lesions) == [lesion.id]
    assert (seen.lesions[lesion.id].name, seen.lesions[lesion.id].site_id) == ("Left shoulder mole", "shoulder")
    assert seen.declined_matches == {("p3", "photo:p1")}
    lesions.add_to_lesion(other, seen, lesion.id, "p2")  # the follow-up photo, on the second replica

    # The first replica's copy is stale; its next change starts from what Redis holds, not from it.
    lesions.update_lesion(one, data, lesion.id, "Shoulder mole", "shoulder")
    again = other.get(data.id, secret=data.secret)
    assert again.lesions[lesion.id].photo_ids == ["p1", "p2"] and again.lesions[lesion.id].name == "Shoulder mole"
    dump = b"".join(raw_values(one.client))
    assert b"Shoulder mole" not in dump and b"shoulder" not in dump  # name and site sealed like the photos

    assert other.remove_photo(again, "p1")  # a deleted photo leaves its lesion and its declined pairs
    after = one.get(data.id, secret=data.secret)
    assert after.lesions[lesion.id].photo_ids == ["p2"] and after.declined_matches == set()
    lesions.ungroup(one, after, "p2")  # the last photo out: the lesion goes
    assert one.get(data.id, secret=data.secret).lesions == {}
    one.delete(data.id)
    assert list(one.client.scan_iter("privascan:*")) == []


def test_a_lesion_change_after_the_session_ended_is_refused(redis_url):
    from webapp import lesions

    store = make_store(redis_url)
    data = store.create()
    store.add_photo(data, make_photo("p1"))
    store.delete(data.id)
    with pytest.raises(StoreFull) as caught:
        lesions.new_lesion(store, data, ["p1"])
    assert caught.value.status == 410
    assert not store.client.exists(session_key(data.id))  # not brought back as an orphan without a TTL
