"""Undo for Delete: the photo just deleted stays in this process's memory for a few seconds.

Delete takes the photo out of the session at once (it leaves the timeline,
the summary, the reports and exports). Its object, with its result and the
lesion it belonged to, is kept here, one per session, for ``seconds``; Undo
puts it back. After that, or when a later delete replaces it, or the session
is cleared, nothing of it is left. Memory only, never a disk, and bounded: one
photo per session (each within the session's own caps), swept on every request.

Scale-out mode: the shelf is per web process, so an Undo that reaches another
replica is told that it is no longer possible (the photo stays deleted).
"""

from __future__ import annotations

import dataclasses
import threading
import time

from .store import Photo

UNDO_SECONDS = 20


@dataclasses.dataclass
class Shelved:
    photo: Photo
    lesion_id: str | None
    until: float


def _value(photo: Photo, field: dataclasses.Field):
    """A field of the photo; one a store does not keep (the scale-out store's photo) gets its default."""
    try:
        return getattr(photo, field.name)
    except AttributeError:
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        raise


class UndoShelf:
    def __init__(self, seconds: float = UNDO_SECONDS, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._items: dict[str, Shelved] = {}
        self._lock = threading.Lock()

    def put(self, store_id: str, photo: Photo, lesion_id: str | None) -> None:
        # A plain copy: the scale-out store's photo loads its bytes lazily, which fails once deleted.
        copy = Photo(**{field.name: _value(photo, field) for field in dataclasses.fields(Photo)})
        with self._lock:
            self._items[store_id] = Shelved(copy, lesion_id, self._clock() + self.seconds)

    def take(self, store_id: str, photo_id: str) -> Shelved | None:
        """The shelved photo, removed from the shelf; None if it expired or is another one."""
        self.sweep()
        with self._lock:
            item = self._items.get(store_id)
            if item is None or item.photo.id != photo_id:
                return None
            return self._items.pop(store_id)

    def drop(self, store_id: str) -> None:
        with self._lock:
            self._items.pop(store_id, None)

    def sweep(self) -> None:
        now = self._clock()
        with self._lock:
            for store_id in [key for key, item in self._items.items() if item.until <= now]:
                del self._items[store_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
