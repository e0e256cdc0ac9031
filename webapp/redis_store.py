"""The session store of scale-out mode: one encrypted Redis hash per session.

Same interface as ``webapp.store.SessionStore`` (the embedded default), so
views and workers do not know which one they talk to. Why one hash per
session: it has one TTL and one DEL, so refreshing the idle timeout is a
single EXPIRE, and "Clear" or expiry removes every photo, crop, heatmap,
result and the live state at once; nothing can be left behind under a second
key. Fields:

    created, last_seen            plain numbers (no user data)
    photo:<id>:meta               sealed pickle: name, date, state, stage...
    photo:<id>:jpeg / :thumb      sealed photo and thumbnail
    photo:<id>:result             sealed pickle of the AnalysisResult
    photo:<id>:extra              sealed pickle of the extra heatmaps
    live                          sealed pickle of the LiveState
    lesions                       sealed pickle: the lesions and the declined "same lesion?" matches
    lock:frame / lock:explain     which request holds the session's live lock
    lock:lesions                  which request is changing the lesions (any replica)

Every value except the two numbers is sealed with the session's key
(``webapp.session_crypto``), which the browser holds, so ``get`` needs it.
The TTL is the idle timeout, refreshed on use, never past the absolute
lifetime. A sorted set of session ids by expiry bounds how many sessions
exist (the ids are random and carry nothing about anyone).

A Redis that is out of memory (``maxmemory`` with ``noeviction``) refuses
writes; that becomes ``StoreFull`` with the same 503 wording as the embedded
store's global cap.
"""

from __future__ import annotations

import contextlib
import pickle
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable

import redis

from .i18n import N_, Message
from .session_crypto import CannotOpen, new_key, seal, unseal
from .store import Photo, SessionData, StoreFull, _megabytes

PREFIX = "privascan:"
INDEX_KEY = PREFIX + "sessions"  # sorted set: session id -> expiry time
BUSY = Message(N_("The server is serving as many people as it can. Please try again in a few minutes."))
MEMORY_FULL = Message(N_("The server's memory for photos is full right now. Please try again in a few minutes."))
META_FIELDS = ("id", "digest", "name", "width", "height", "taken_on", "date_source", "added_at", "state", "stage", "error",
               "source_digest")

# HSET only while the session still exists: a write racing with "Clear" or
# expiry must not bring a deleted session back as an orphan without a TTL.
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# Bytes a session holds: the sum of its fields' lengths.
_SESSION_BYTES = """
local total = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  total = total + redis.call('HSTRLEN', KEYS[1], name)
end
return total
"""
# A lock owned by one request: released only by its owner.
_RELEASE_LOCK = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
_TAKE_LOCK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and tonumber(string.match(held, '^[^:]+')) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


KEY_CHECK = b"privascan session key check"
LESIONS_FIELD = "lesions"
ENDED = Message(N_("Your session ended. Please reload the page."))


def _pickle(value) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def session_key(store_id: str) -> str:
    return f"{PREFIX}s:{store_id}"


class _Lazy:
    """A photo attribute read (and unsealed) from Redis on first use, then kept for the request."""

    def __init__(self, field: str, default: Callable[[], Any]):
        self.field = field
        self.default = default

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, photo, owner=None):
        if photo is None:
            return self
        value = photo.__dict__.get(self.slot, _UNLOADED)
        if value is _UNLOADED:
            value = photo._load(self.field, self.default)
            photo.__dict__[self.slot] = value
        return value

    def __set__(self, photo, value):
        photo.__dict__[self.slot] = value


_UNLOADED = object()


class RedisPhoto(Photo):
    """A Photo whose bytes and result stay in Redis until a view needs them.

    The timeline lists 40 photos without moving 40 full-size JPEGs.
    """

    jpeg = _Lazy("jpeg", bytes)
    thumbnail = _Lazy("thumb", bytes)
    result = _Lazy("result", lambda: None)
    extra_heatmaps = _Lazy("extra", dict)

    def _bind(self, store: "RedisSessionStore", store_id: str, secret: bytes) -> "RedisPhoto":
        self._store, self._store_id, self._secret = store, store_id, secret
        return self

    def _load(self, field: str, default):
        raw = self._store.read_field(self._store_id, self._secret, f"photo:{self.id}:{field}")
        if raw is None:
            return default()
        return raw if field in ("jpeg", "thumb") else pickle.loads(raw)

    @property
    def size_bytes(self) -> int:  # from Redis's lengths, without loading anything
        return self._store.photo_bytes(self._store_id, self.id)


def _unloaded_photo(meta: dict) -> RedisPhoto:
    photo = RedisPhoto.__new__(RedisPhoto)
    for name in META_FIELDS:
        setattr(photo, name, meta.get(name, ""))  # source_digest: absent in photos stored before it existed
    for slot in ("_jpeg", "_thumbnail", "_result", "_extra_heatmaps"):
        photo.__dict__[slot] = _UNLOADED
    photo.pending = {}  # room claims live in Redis (RedisSessionStore.claim_room), not on the photo
    return photo


class RedisLock:
    """The ``acquire(blocking=False)`` / ``release()`` of a threading.Lock, shared by all replicas.

    Live scan allows one frame (and one heatmap) in flight per session; with
    several web replicas that rule has to live in Redis. The lock expires on
    its own, so a replica that died holding it does not block the session.
    """

    def __init__(self, store: "RedisSessionStore", store_id: str, name: str, seconds: float):
        self._store, self._key, self._name, self._seconds = store, session_key(store_id), f"lock:{name}", seconds
        self._token = ""

    def acquire(self, blocking: bool = False) -> bool:
        now = time.time()
        token = f"{now + self._seconds}:{secrets.token_hex(8)}"
        taken = self._store.client.eval(_TAKE_LOCK, 1, self._key, self._name, token, now)
        if taken:
            self._token = token
        return bool(taken)

    def release(self) -> None:
        if self._token:
            self._store.client.eval(_RELEASE_LOCK, 1, self._key, self._name, self._token)
            self._token = ""


class RedisSessionStore:
    """Sessions in Redis, sealed with keys the browsers hold; safe from any thread and any replica."""

    LIVE_LOCK_SECONDS = 300.0

    def __init__(
        self,
        client: redis.Redis,
        idle_seconds: float,
        lifetime_seconds: float,
        max_sessions: int,
        max_photos: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        max_total_bytes: int | None = None,  # Redis's maxmemory is the global cap in this mode
    ):
        self.client = client
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.max_sessions = max_sessions
        self.max_photos = max_photos
        self.max_bytes = max_bytes
        self._clock = clock
        # This replica's decodes in flight, per session (they are in this process's memory, not Redis's).
        self._reserved: dict[str | None, int] = {}
        self._reserved_lock = threading.Lock()

    # -- low level ------------------------------------------------------------
    def _ttl(self, created: float, now: float) -> int:
        return int(min(self.idle_seconds, created + self.lifetime_seconds - now))

    def _write(self, store_id: str, secret: bytes, values: dict[str, bytes]) -> bool:
        """Seal and HSET ``values`` if the session still exists; False if it does not."""
        arguments: list = []
        for field, raw in values.items():
            arguments += [field, seal(secret, raw, f"{store_id}/{field}")]
        try:
            return bool(self.client.eval(_HSET_IF_EXISTS, 1, session_key(store_id), *arguments))
        except redis.exceptions.OutOfMemoryError:
            raise StoreFull(MEMORY_FULL, 503) from None

    def read_field(self, store_id: str, secret: bytes, field: str) -> bytes | None:
        sealed = self.client.hget(session_key(store_id), field)
        if sealed is None:
            return None
        try:
            return unseal(secret, sealed, f"{store_id}/{field}")
        except CannotOpen:
            return None

    def photo_bytes(self, store_id: str, photo_id: str) -> int:
        key = session_key(store_id)
        names = [name for name in self.client.hkeys(key) if name.startswith(f"photo:{photo_id}:".encode())]
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hstrlen(key, name)
            return sum(pipe.execute())

    def session_bytes(self, store_id: str) -> int:
        return int(self.client.eval(_SESSION_BYTES, 1, session_key(store_id)))

    # -- sessions -------------------------------------------------------------
    def create(self) -> SessionData:
        self.sweep()
        if len(self) >= self.max_sessions:
            raise StoreFull(BUSY, 503)
        now = self._clock()
        data = SessionData(id=secrets.token_urlsafe(16), created=now, last_seen=now, secret=new_key())
        key = session_key(data.id)
        try:
            with self.client.pipeline() as pipe:
                pipe.hset(key, mapping={"created": repr(now), "last_seen": repr(now),
                                        "keycheck": seal(data.secret, KEY_CHECK, f"{data.id}/keycheck")})
                pipe.expire(key, self._ttl(now, now))
                pipe.zadd(INDEX_KEY, {data.id: now + self._ttl(now, now)})
                pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            raise StoreFull(BUSY, 503) from None
        return data

    def get(self, store_id: str | None, touch: bool = True, secret: bytes | None = None) -> SessionData | None:
        """The session with this id, unsealed with ``secret``; None if unknown, expired or the key is wrong."""
        if not store_id or secret is None:
            return None
        key = session_key(store_id)
        created, last_seen, check = self.client.hmget(key, "created", "last_seen", "keycheck")
        if created is None or check is None:
            return None
        try:
            if unseal(secret, check, f"{store_id}/keycheck") != KEY_CHECK:
                return None
        except CannotOpen:
            return None  # not this session's key: nothing of it is readable
        now = self._clock()
        created = float(created)
        ttl = self._ttl(created, now)
        if ttl <= 0:
            self.delete(store_id)
            return None
        meta_fields = [name for name in self.client.hkeys(key) if name.endswith(b":meta")]
        photos = []
        for name, sealed in zip(meta_fields, self.client.hmget(key, meta_fields) if meta_fields else []):
            if sealed is None:  # removed meanwhile
                continue
            try:
                meta = pickle.loads(unseal(secret, sealed, f"{store_id}/{name.decode()}"))
            except CannotOpen:  # altered in Redis: never unpickled, never shown
                continue
            photos.append(_unloaded_photo(meta)._bind(self, store_id, secret))
        photos.sort(key=lambda photo: photo.added_at)
        data = SessionData(id=store_id, created=created, last_seen=float(last_seen or created),
                           photos=OrderedDict((photo.id, photo) for photo in photos), secret=secret)
        raw_live = self.read_field(store_id, secret, "live")
        if raw_live is not None:
            data.live = pickle.loads(raw_live)
            self._attach_locks(data)
        self._load_lesions(data)
        if touch:
            with self.client.pipeline() as pipe:
                pipe.hset(key, "last_seen", repr(now))
                pipe.expire(key, ttl)
                pipe.zadd(INDEX_KEY, {store_id: now + ttl})
                try:
                    pipe.execute()
                except redis.exceptions.OutOfMemoryError:
                    pass  # reading still works; the next write says the server is full
            data.last_seen = now
        return data

    def _attach_locks(self, data: SessionData) -> None:
        data.live.frame_lock = RedisLock(self, data.id, "frame", self.LIVE_LOCK_SECONDS)
        data.live.explain_lock = RedisLock(self, data.id, "explain", self.LIVE_LOCK_SECONDS)

    def delete(self, store_id: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.delete(session_key(store_id))
            pipe.zrem(INDEX_KEY, store_id)
            pipe.execute()

    def sweep(self) -> int:
        """Forget sessions past their expiry (Redis has already deleted their hash; this makes sure)."""
        now = self._clock()
        expired = [sid.decode() for sid in self.client.zrangebyscore(INDEX_KEY, "-inf", now)]
        if expired:
            with self.client.pipeline() as pipe:
                pipe.delete(*(session_key(sid) for sid in expired))
                pipe.zrem(INDEX_KEY, *expired)
                pipe.execute()
        return len(expired)

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return int(self.client.zcount(INDEX_KEY, f"({self._clock()}", "+inf"))

    def total_bytes(self) -> int:
        ids = [sid.decode() for sid in self.client.zrangebyscore(INDEX_KEY, f"({self._clock()}", "+inf")]
        return sum(self.session_bytes(sid) for sid in ids)

    # -- photos ---------------------------------------------------------------
    def add_photo(self, data: SessionData, photo: Photo) -> None:
        if len(data.photos) >= self.max_photos:
            raise StoreFull(Message(N_("This session already holds %(limit)d photos, the most allowed. Delete some first."), limit=self.max_photos))
        size = len(photo.jpeg) + len(photo.thumbnail)
        with self._reserved_lock:
            others_in_flight = self._reserved.get(data.id, 0)
        if self.session_bytes(data.id) + others_in_flight + size > self.max_bytes:
            raise StoreFull(Message(N_("This session's photos have reached the memory allowed. Delete some first.")))
        meta = {name: getattr(photo, name) for name in META_FIELDS}
        values = {f"photo:{photo.id}:meta": _pickle(meta), f"photo:{photo.id}:jpeg": photo.jpeg,
                  f"photo:{photo.id}:thumb": photo.thumbnail}
        if photo.result is not None:
            values[f"photo:{photo.id}:result"] = _pickle(photo.result)
        if not self._write(data.id, data.secret, values):
            raise StoreFull(Message(N_("Your session ended before the photo could be added. Please reload the page.")), 410)
        data.photos[photo.id] = _unloaded_photo(meta)._bind(self, data.id, data.secret)

    def find_duplicate(self, data: SessionData, digest: str) -> Photo | None:
        """A photo with these pixels (``digest``) or these uploaded bytes (``source_digest``)."""
        return next((p for p in data.photos.values() if digest in (p.digest, p.source_digest)), None)

    # -- memory in flight -------------------------------------------------------
    def _check_room(self, data: SessionData, nbytes: int, what: str) -> None:
        with self._reserved_lock:
            reserved = self._reserved.get(data.id, 0)
        if self.session_bytes(data.id) + reserved + nbytes > self.max_bytes:
            raise StoreFull(f"{what} would need about {_megabytes(nbytes)} of memory, more than this session has "
                            f"left of its {_megabytes(self.max_bytes)}. Delete some photos first, or send a smaller photo.")

    @contextlib.contextmanager
    def reserve(self, data: SessionData | None, nbytes: int, what: str = "Decoding this photo"):
        """Count a decode's estimated peak in the session's cap while it runs (Redis's maxmemory is the total cap;
        this replica's own decode memory is bounded by webapp/decoding.py's gate)."""
        key = data.id if data is not None else None
        if data is not None:
            self._check_room(data, nbytes, what)
        with self._reserved_lock:
            self._reserved[key] = self._reserved.get(key, 0) + nbytes
        try:
            yield
        finally:
            with self._reserved_lock:
                self._reserved[key] -= nbytes
                if not self._reserved[key]:
                    del self._reserved[key]

    def claim_room(self, data: SessionData, photo: Photo, kind: str, nbytes: int) -> None:
        """Refuse a job whose result cannot fit in the session's cap (Redis counts the result once written)."""
        self._check_room(data, nbytes, "Its result")

    def release_room(self, store_id: str, photo_id: str, kind: str, secret: bytes | None = None) -> None:
        """Nothing is held between the claim and the write-back here: the result's own bytes count from then on."""

    def get_photo(self, store_id: str | None, photo_id: str, touch: bool = True, secret: bytes | None = None) -> Photo | None:
        data = self.get(store_id, touch=touch, secret=secret)
        return data.photos.get(photo_id) if data else None

    def remove_photo(self, data: SessionData, photo_id: str) -> bool:
        from .lesions import forget_photo

        key = session_key(data.id)
        with self.locked(data):
            forget_photo(data, photo_id)  # a deleted photo leaves its lesion (an empty lesion goes)
            names = [name for name in self.client.hkeys(key) if name.startswith(f"photo:{photo_id}:".encode())]
            data.photos.pop(photo_id, None)
            return bool(names) and bool(self.client.hdel(key, *names))

    # -- lesions ----------------------------------------------------------------
    LESION_LOCK_SECONDS = 10.0

    def _load_lesions(self, data: SessionData) -> None:
        raw = self.read_field(data.id, data.secret, LESIONS_FIELD)
        lesions, declined = pickle.loads(raw) if raw is not None else (OrderedDict(), set())
        data.lesions, data.declined_matches = lesions, declined

    @contextmanager
    def locked(self, data: SessionData | None = None):
        """A compound change to one session's lesions (webapp/lesions.py), safe across replicas.

        The embedded store's lock is one process's RLock over objects it
        holds. Here the lesions are a sealed field: take the session's
        lesion lock in Redis, read the lesions afresh (another replica may
        have changed them since this request loaded the session), let the
        caller change ``data``, then write them back. A caller that raises
        writes nothing.
        """
        if data is None:
            raise ValueError("the Redis store locks one session's data: pass it")
        lock = RedisLock(self, data.id, "lesions", self.LESION_LOCK_SECONDS)
        deadline = time.monotonic() + self.LESION_LOCK_SECONDS
        while not lock.acquire():
            if not self.client.exists(session_key(data.id)):
                raise StoreFull(ENDED, 410)
            if time.monotonic() > deadline:  # a replica died holding it: its lock has expired by now anyway
                raise StoreFull(BUSY, 503)
            time.sleep(0.02)
        try:
            self._load_lesions(data)
            yield
            if not self._write(data.id, data.secret, {LESIONS_FIELD: _pickle((data.lesions, data.declined_matches))}):
                raise StoreFull(ENDED, 410)
        finally:
            lock.release()

    def update_photo(self, store_id: str, photo_id: str, secret: bytes | None = None, if_state: str | None = None,
                     **changes: Any) -> bool:
        """Set fields of a photo if its session and the photo still exist (and its state is ``if_state``, if given).

        A worker's or a view's write-back; ``if_state`` makes "mark it failed
        unless it finished meanwhile" one atomic step (WATCH on the hash).
        """
        if secret is None:
            raise ValueError("the Redis store needs the session's key to write a photo")
        key = session_key(store_id)
        meta_field = f"photo:{photo_id}:meta"
        values: dict[str, bytes] = {}
        if "result" in changes:
            values[f"photo:{photo_id}:result"] = _pickle(changes.pop("result"))
        if "extra_heatmaps" in changes:
            values[f"photo:{photo_id}:extra"] = _pickle(changes.pop("extra_heatmaps"))

        def change_meta(pipe: redis.client.Pipeline) -> bool:
            sealed = pipe.hget(key, meta_field)
            if sealed is None:
                return False
            try:
                meta = pickle.loads(unseal(secret, sealed, f"{store_id}/{meta_field}"))
            except CannotOpen:
                return False
            if if_state is not None and meta["state"] != if_state:
                return False
            meta.update(changes)
            pipe.multi()
            arguments = []
            for field, raw in {meta_field: _pickle(meta), **values}.items():
                arguments += [field, seal(secret, raw, f"{store_id}/{field}")]
            pipe.eval(_HSET_IF_EXISTS, 1, key, *arguments)
            return True

        try:
            return self.client.transaction(change_meta, key, value_from_callable=True)
        except redis.exceptions.OutOfMemoryError:
            raise StoreFull(MEMORY_FULL, 503) from None

    # -- live scan --------------------------------------------------------------
    def save_live(self, data: SessionData) -> None:
        """Write the session's live state back (the embedded store holds the object itself)."""
        if data.live is None:
            self.client.hdel(session_key(data.id), "live")
        elif not self._write(data.id, data.secret, {"live": _pickle(data.live)}):
            raise StoreFull(ENDED, 410)
        if data.live is not None and not isinstance(data.live.frame_lock, RedisLock):
            self._attach_locks(data)

    def live_is_current(self, data: SessionData, live) -> bool:
        """Whether ``live`` is still the session's scan (not cleared or restarted elsewhere meanwhile)."""
        raw = self.read_field(data.id, data.secret, "live")
        return raw is not None and pickle.loads(raw).run_id == live.run_id
