"""Per-session, in-memory storage of photos and results, with hard bounds.

The Flask session (a cookie pointing at a small server-side dict) only holds
``store_id``; the bytes of photos, crops and heatmaps live here, in this
process's memory, so they are never pickled on each request and never touch a
disk. A store is unreachable without its id (128 random bits), and it is
deleted, not hidden, when the session is cleared, idles out or reaches its
absolute lifetime.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from .i18n import N_, Message


class StoreFull(Exception):
    """A cap was reached; ``message`` says which, in words, and ``status`` the HTTP code."""

    def __init__(self, message: str, status: int = 413):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Photo:
    id: str
    digest: str
    name: str  # shown (escaped) on the card; never logged
    jpeg: bytes  # sanitised photo, metadata stripped
    thumbnail: bytes
    width: int
    height: int
    taken_on: dt.date
    date_source: str  # "photo metadata", "file date" or "upload day"
    added_at: float = field(default_factory=time.time)
    state: str = "new"  # new, queued, running, done, error
    stage: str = ""
    error: str = ""
    result: Any = None  # webapp.pipeline.AnalysisResult once done
    extra_heatmaps: dict[str, bytes] = field(default_factory=dict)
    # sha256 of the bytes as uploaded: a re-sent file is known as a duplicate before it is decoded.
    source_digest: str = ""
    # Room claimed for the results of queued or running jobs (job kind -> bytes), so that
    # jobs waiting in the queue cannot together overshoot the caps (SessionStore.claim_room).
    pending: dict[str, int] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        result_bytes = self.result.size_bytes if self.result is not None else 0
        return (len(self.jpeg) + len(self.thumbnail) + result_bytes + sum(map(len, self.extra_heatmaps.values()))
                + sum(self.pending.values()))


@dataclass
class SessionData:
    id: str
    created: float
    last_seen: float
    photos: OrderedDict[str, Photo] = field(default_factory=OrderedDict)
    live: Any = None  # webapp.live.LiveState while a live scan has been started
    # Scale-out mode only: the key this session's values are sealed with in
    # Redis (the browser holds it); None in the embedded store.
    secret: bytes | None = None
    # Photos the user grouped as one lesion (webapp/lesions.py): id -> Lesion. Each
    # lesion holds at least one of this session's photos, so the photo cap bounds it.
    lesions: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    # (photo id, candidate) pairs the user answered "not the same lesion" to.
    declined_matches: set[tuple[str, str]] = field(default_factory=set)
    # Estimated bytes of this session's decodes in flight (SessionStore.reserve).
    reserved_bytes: int = 0

    @property
    def size_bytes(self) -> int:
        """Everything the session holds: photos, results (crops, heatmaps, claimed room), live state, decodes in flight."""
        live = self.live.size_bytes if self.live is not None else 0
        return sum(photo.size_bytes for photo in self.photos.values()) + live + self.reserved_bytes


def _megabytes(nbytes: int) -> str:
    return f"{max(1, round(nbytes / (1024 * 1024)))} MB"


class SessionStore:
    """All sessions' data, behind one lock; every method is safe from any thread."""

    def __init__(
        self,
        idle_seconds: float,
        lifetime_seconds: float,
        max_sessions: int,
        max_photos: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        max_total_bytes: int | None = None,
    ):
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self.max_sessions = max_sessions
        self.max_photos = max_photos
        self.max_bytes = max_bytes
        # Across all sessions: max_sessions x max_bytes alone would allow far
        # more memory than a clinic machine has.
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._sessions: dict[str, SessionData] = {}
        self._lock = threading.RLock()
        self._unsessioned_reserved = 0  # decodes in flight for the stateless API

    # -- sessions -----------------------------------------------------------
    def create(self) -> SessionData:
        self.sweep()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise StoreFull(Message(N_("The server is serving as many people as it can. Please try again in a few minutes.")), 503)
            now = self._clock()
            data = SessionData(id=secrets.token_urlsafe(16), created=now, last_seen=now)
            self._sessions[data.id] = data
            return data

    def get(self, store_id: str | None, touch: bool = True, secret: bytes | None = None) -> SessionData | None:
        """The live session with this id, or None (unknown, deleted or expired).

        ``secret`` is for the Redis store's interface (the session's key); here
        the data never leaves this process, so it is not sealed.
        """
        if not store_id:
            return None
        with self._lock:
            data = self._sessions.get(store_id)
            if data is None:
                return None
            if self._expired(data, self._clock()):
                self._delete_locked(store_id)
                return None
            if touch:
                data.last_seen = self._clock()
            return data

    def delete(self, store_id: str) -> None:
        with self._lock:
            self._delete_locked(store_id)

    def _delete_locked(self, store_id: str) -> None:
        data = self._sessions.pop(store_id, None)
        if data is not None:
            # Drop every reference so the bytes are freed now, even if a
            # worker still holds the SessionData object.
            data.photos.clear()
            data.live = None
            data.lesions.clear()
            data.declined_matches.clear()

    def _expired(self, data: SessionData, now: float) -> bool:
        return now - data.last_seen > self.idle_seconds or now - data.created > self.lifetime_seconds

    def sweep(self) -> int:
        """Delete every expired session; returns how many were deleted."""
        with self._lock:
            now = self._clock()
            expired = [sid for sid, data in self._sessions.items() if self._expired(data, now)]
            for store_id in expired:
                self._delete_locked(store_id)
            return len(expired)

    def now(self) -> float:
        """The store's clock (wall time, replaceable in tests); the session cache expires by it too."""
        return self._clock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(data.size_bytes for data in self._sessions.values()) + self._unsessioned_reserved

    # -- memory in flight ---------------------------------------------------------
    def _check_room(self, data: SessionData | None, nbytes: int, what: str) -> None:
        """Raise StoreFull, in words, if ``nbytes`` more would pass the session's or the server's cap."""
        if data is not None and data.size_bytes + nbytes > self.max_bytes:
            raise StoreFull(f"{what} would need about {_megabytes(nbytes)} of memory, more than this session has "
                            f"left of its {_megabytes(self.max_bytes)}. Delete some photos first, or send a smaller photo.")
        if self.max_total_bytes is not None and self.total_bytes() + nbytes > self.max_total_bytes:
            raise StoreFull("The server's memory for photos is full right now. Please try again in a few minutes.", 503)

    @contextlib.contextmanager
    def reserve(self, data: SessionData | None, nbytes: int, what: str = "Decoding this photo"):
        """Count ``nbytes`` (a decode's estimated peak) in the caps while the block runs; StoreFull if no room.

        ``data`` None: the stateless API, counted in the total cap only.
        """
        with self._lock:
            self._check_room(data, nbytes, what)
            if data is None:
                self._unsessioned_reserved += nbytes
            else:
                data.reserved_bytes += nbytes
        try:
            yield
        finally:
            with self._lock:
                if data is None:
                    self._unsessioned_reserved -= nbytes
                else:
                    data.reserved_bytes -= nbytes

    def claim_room(self, data: SessionData, photo: Photo, kind: str, nbytes: int) -> None:
        """Room for a queued job's result (its crop and heatmap), held until the job writes back or fails."""
        with self._lock:
            self._check_room(data, nbytes - photo.pending.get(kind, 0), "Its result")
            photo.pending[kind] = nbytes

    def release_room(self, store_id: str, photo_id: str, kind: str, secret: bytes | None = None) -> None:
        with self._lock:
            data = self._sessions.get(store_id)
            photo = data.photos.get(photo_id) if data else None
            if photo is not None:
                photo.pending.pop(kind, None)

    # -- photos -------------------------------------------------------------
    def add_photo(self, data: SessionData, photo: Photo) -> None:
        with self._lock:
            if len(data.photos) >= self.max_photos:
                raise StoreFull(Message(N_("This session already holds %(limit)d photos, the most allowed. Delete some first."), limit=self.max_photos))
            if data.size_bytes + photo.size_bytes > self.max_bytes:
                raise StoreFull(Message(N_("This session's photos have reached the memory allowed. Delete some first.")))
            if self.max_total_bytes is not None and self.total_bytes() + photo.size_bytes > self.max_total_bytes:
                raise StoreFull(Message(N_("The server's memory for photos is full right now. Please try again in a few minutes.")), 503)
            data.photos[photo.id] = photo

    def find_duplicate(self, data: SessionData, digest: str) -> Photo | None:
        """A photo with these pixels (``digest``) or these uploaded bytes (``source_digest``)."""
        with self._lock:
            return next((p for p in data.photos.values() if digest in (p.digest, p.source_digest)), None)

    def get_photo(self, store_id: str | None, photo_id: str, touch: bool = True, secret: bytes | None = None) -> Photo | None:
        data = self.get(store_id, touch=touch)
        if data is None:
            return None
        with self._lock:
            return data.photos.get(photo_id)

    def remove_photo(self, data: SessionData, photo_id: str) -> bool:
        from .lesions import forget_photo

        with self._lock:
            forget_photo(data, photo_id)  # a deleted photo leaves its lesion (an empty lesion goes)
            return data.photos.pop(photo_id, None) is not None

    def locked(self, data: SessionData | None = None):
        """The store's lock, for a compound change to ``data`` (webapp/lesions.py; the Redis store writes it back)."""
        return self._lock

    def update_photo(self, store_id: str, photo_id: str, secret: bytes | None = None, if_state: str | None = None,
                     **changes: Any) -> bool:
        """Set fields of a photo if its session and the photo still exist (and its state is ``if_state``, if given)."""
        with self._lock:
            data = self._sessions.get(store_id)
            photo = data.photos.get(photo_id) if data else None
            if photo is None or (if_state is not None and photo.state != if_state):
                return False
            for key, value in changes.items():
                setattr(photo, key, value)
            return True

    # -- live scan ------------------------------------------------------------
    def save_live(self, data: SessionData) -> None:
        """Nothing to do: this store holds the LiveState object itself (the Redis store writes it back)."""

    def live_is_current(self, data: SessionData, live) -> bool:
        """Whether ``live`` is still the session's scan (not cleared or restarted meanwhile)."""
        with self._lock:
            return data.id in self._sessions and data.live is live
