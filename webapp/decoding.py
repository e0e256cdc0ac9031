"""Bounded decoding: no photo is decoded before its memory is known to fit.

A 46 KB PNG can declare 8000x6000 pixels, and decoding it costs hundreds
of megabytes for a moment; eight at once took the server from 1.1 GB to
6.3 GB. So every decode (photos, API images, live frames) goes through
``decoding``:

1. the header is read (``images.open_photo``: size and mode are known before
   a pixel is decoded; JPEGs are set to decode at reduced scale), and the
   decode's peak memory estimated (``images.decode_cost``);
2. that estimate is reserved in the session store's caps (per session and
   for all sessions together), where it counts like stored bytes until the
   decode is done: what cannot fit is refused at once, in words;
3. a gate admits at most ``DECODE_SLOTS`` decodes at a time and at most
   ``DECODE_MEMORY_MB`` of estimated decode memory in flight; a request that
   waits longer than ``DECODE_WAIT_SECONDS`` for its turn is told the server
   is busy (503).
"""

from __future__ import annotations

import contextlib
import threading

from flask import Flask, current_app

from .i18n import N_, Message
from .memory import release_freed_memory
from .images import WORKING_MAX_SIDE, DecodedPhoto, ImageRejected, decode_photo, open_photo
from .store import SessionData, StoreFull

BUSY = Message(N_("The server is decoding as many photos as it can right now. Please try again in a moment."))


class DecodeGate:
    """At most ``slots`` decodes at once, holding at most ``max_bytes`` of estimated memory together."""

    def __init__(self, slots: int, max_bytes: int, wait_seconds: float):
        self.slots = max(1, slots)
        self.max_bytes = max_bytes
        self.wait_seconds = wait_seconds
        self._running = 0
        self._in_flight = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def admitted(self, cost: int):
        if cost > self.max_bytes:
            raise ImageRejected(
                Message(N_("Decoding this image would need about %(need)d MB of memory, more than this server decodes at "
                           "once (%(limit)d MB). Please send a smaller photo (fewer pixels)."),
                        need=cost // (1024 * 1024), limit=self.max_bytes // (1024 * 1024)), 413)
        with self._changed:
            room = lambda: self._running < self.slots and self._in_flight + cost <= self.max_bytes  # noqa: E731
            if not self._changed.wait_for(room, timeout=self.wait_seconds):
                raise StoreFull(BUSY, 503)
            self._running += 1
            self._in_flight += cost
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._in_flight -= cost
                self._changed.notify_all()

    def in_flight(self) -> tuple[int, int]:
        """(decodes running, their estimated bytes), for tests and figures."""
        with self._changed:
            return self._running, self._in_flight


def init_app(app: Flask) -> None:
    config = app.config
    app.extensions["privascan_decode_gate"] = DecodeGate(
        int(config["DECODE_SLOTS"]), int(config["DECODE_MEMORY_BYTES"]), float(config["DECODE_WAIT_SECONDS"]))


@contextlib.contextmanager
def decoding(data: bytes, session: SessionData | None, max_pixels: int, max_side: int = WORKING_MAX_SIDE):
    """Yield the clean decoded photo while its decode's memory is counted in the caps and the gate.

    Raises ImageRejected (a bad or oversized image) or StoreFull (no room, or
    the server busy) with a message for the person who sent it. Keep the
    block short: encode what is kept inside it, then leave it.
    """
    opened = open_photo(data, max_pixels, max_side)
    store = current_app.extensions["privascan_store"]
    gate: DecodeGate = current_app.extensions["privascan_decode_gate"]
    try:
        with store.reserve(session, opened.cost_bytes), gate.admitted(opened.cost_bytes):
            decoded: DecodedPhoto = decode_photo(opened)
            yield decoded
            del decoded
    finally:
        # The decoder's large buffers are freed by now; glibc would keep their pages in this
        # thread's heap arena, so the process would stay at its peak long after the decode.
        release_freed_memory()
