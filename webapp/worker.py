"""One background inference thread fed by a bounded queue.

Web threads never run a model: they enqueue a job and return at once, and the
page polls the card. One thread and one model copy per process keeps memory
predictable on a clinic laptop; the queue bound turns overload into a polite
"busy" answer instead of an ever-growing backlog.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .memory import release_freed_memory

log = logging.getLogger(__name__)


class QueueFull(Exception):
    message = "The analyser is busy with other photos. Please try again in a minute."


@dataclass(frozen=True)
class Job:
    store_id: str
    photo_id: str
    kind: str = "analyze"  # or "explain" (an extra heatmap for one condition)
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.store_id, self.photo_id, self.kind)


class InferenceWorker:
    def __init__(self, handler: Callable[[Job], None], maxsize: int):
        self._handler = handler
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=maxsize)
        self._pending: deque[tuple[str, str, str]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: Job | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="privascan-inference", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> int:
        """Queue a job; returns its 1-based position. Raises QueueFull when the queue is full."""
        with self._lock:
            if job.key in self._pending:
                return self._pending.index(job.key) + 1
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull() from None
            self._pending.append(job.key)
            return len(self._pending)

    def position(self, store_id: str, photo_id: str, kind: str = "analyze") -> int | None:
        with self._lock:
            try:
                return self._pending.index((store_id, photo_id, kind)) + 1
            except ValueError:
                return None

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def join_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued job has been handled (tests and scripts)."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        _lower_this_threads_priority()
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            with self._lock:
                if job.key in self._pending:
                    self._pending.remove(job.key)
                self.current = job
            try:
                self._handler(job)
            except Exception:
                # The handler reports failures on the card itself; this is
                # the last line of defence so the worker thread never dies.
                # No photo names or results are logged, only the job kind.
                log.exception("inference job of kind %s failed", job.kind)
            finally:
                with self._lock:
                    self.current = None
                # Activations of the job just done sit freed in malloc's heap;
                # hand them back so memory stays flat between jobs.
                release_freed_memory()
                self._queue.task_done()


INFERENCE_NICENESS = 10


def _lower_this_threads_priority() -> None:
    """Let web threads win the CPU over the model (Linux: niceness is per thread).

    On a small machine the model would otherwise compete as an equal with
    the threads answering pages, polls and pictures, and the interface would
    stall while the queue is full. When nothing else wants the CPU the model
    still gets all of it; the threads torch starts from here inherit the value.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFERENCE_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass
