"""One background inference thread fed by a bounded queue.

Web threads never run a model: they submit a job and either return at once
(the page polls the card) or wait on the job's handle with a timeout (the
JSON API, live frames). One thread and one model copy per process keeps
memory predictable on a clinic laptop; the queue bound turns overload into a
polite "busy" answer instead of an ever-growing backlog.

There is one kind of job: a key (what the job is about, so the same photo is
never queued twice and its card can show its place in the queue) and a
callable that does the work. What the callable does is the business of
``webapp.jobs``; the worker only runs it and settles its future.

A job may also say how to run it together with others (``Batchable``: live
frames of several sessions share one vision forward on a GPU). When the
worker starts such a job it takes the jobs of the same group still waiting
behind it, up to the job's limit, and runs them as one batch; nothing waits
for a batch to fill, so batching adds no latency: it only happens when
frames queue up while the model is busy.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from flask_babel import gettext

from .memory import release_freed_memory

log = logging.getLogger(__name__)


class QueueFull(Exception):
    @property
    def message(self) -> str:  # in the language of the request that shows it
        return gettext("The analyser is busy with other photos. Please try again in a minute.")


@dataclass(eq=False)
class Batchable:
    """How a job can run together with other waiting jobs of its ``group`` (the same clinical app's live frames)."""

    group: Hashable
    item: Any  # this job's part of a batch (a frame and its picture kind)
    run: Callable[[list], list]  # the items of a batch -> their values, in order
    limit: int  # at most this many jobs in one batch


@dataclass(eq=False)
class Job:
    """What to run (``work``) and what it is about (``key``); ``future`` receives its value."""

    key: Hashable
    work: Callable[[], Any]
    future: Future = field(default_factory=Future)
    batch: Batchable | None = None
    taken: bool = False  # already run in an earlier job's batch; skipped when the queue hands it out


class JobHandle:
    """What ``submit`` returns: wait for the job, give up on it, or ask for its place in the queue."""

    def __init__(self, worker: "InferenceWorker", job: Job):
        self._worker = worker
        self._job = job

    @property
    def key(self) -> Hashable:
        return self._job.key

    def result(self, timeout: float | None = None) -> Any:
        """The job's value; raises its exception, or TimeoutError after ``timeout`` seconds."""
        return self._job.future.result(timeout)

    def cancel(self) -> bool:
        """Drop the job if it has not started; True when it will never run."""
        cancelled = self._job.future.cancel()
        if cancelled:
            self._worker._forget(self._job)
        return cancelled

    def done(self) -> bool:
        return self._job.future.done()

    def position(self) -> int | None:
        """1-based place in the queue; None once the job has started (or ended)."""
        return self._worker.position(self._job.key)


class InferenceWorker:
    def __init__(self, maxsize: int):
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=maxsize)
        self._pending: deque[Job] = deque()  # queued, not started, in order
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: Job | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="privascan-inference", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> JobHandle:
        """Queue a job. A job with the key of one still waiting is not queued twice: the
        waiting one's handle is returned. Raises QueueFull when the queue is full."""
        with self._lock:
            for waiting in self._pending:
                if waiting.key == job.key:
                    return JobHandle(self, waiting)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull() from None
            self._pending.append(job)
            return JobHandle(self, job)

    def position(self, key: Hashable) -> int | None:
        with self._lock:
            for index, waiting in enumerate(self._pending, start=1):
                if waiting.key == key:
                    return index
            return None

    def positions(self, keys) -> dict:
        """The 1-based places of several waiting jobs, read at one moment (a page shows them side by side)."""
        with self._lock:
            places = {waiting.key: place for place, waiting in enumerate(self._pending, start=1)}
        return {key: places[key] for key in keys if key in places}

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def overdue(self, key: Hashable) -> bool:
        """Never: this thread's job either ends or takes the whole process, and its sessions, with it.

        (Scale-out workers are other processes that can vanish mid-job; see ``RemoteWorker.overdue``.)
        """
        return False

    def overdue_keys(self, keys: list) -> set:
        return set()

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

    def _forget(self, job: Job) -> None:
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)

    def _run(self) -> None:
        _lower_this_threads_priority()
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            if job.taken:  # it ran in an earlier job's batch
                self._queue.task_done()
                continue
            with self._lock:
                if job in self._pending:
                    self._pending.remove(job)
                jobs = [job, *self._batch_mates(job)]
                self.current = job
            try:
                # False for a job whose caller gave up waiting: it is not run.
                running = [each for each in jobs if each.future.set_running_or_notify_cancel()]
                if len(running) == 1 and running[0] is job:
                    self._settle(job)
                elif running:
                    self._settle_batch(running)
            finally:
                with self._lock:
                    self.current = None
                # Drop the callables and batch items: they hold the callers' data (a frame,
                # a crop), which must not outlive the job in the worker's last reference.
                for each in jobs:
                    each.work, each.batch = _done, None
                # Activations of the job just done sit freed in malloc's heap;
                # hand them back so memory stays flat between jobs.
                release_freed_memory()
                self._queue.task_done()

    def _batch_mates(self, job: Job) -> list[Job]:
        """The waiting jobs that run in ``job``'s batch, taken out of the queue's order (lock held)."""
        if job.batch is None or job.batch.limit <= 1:
            return []
        mates = [waiting for waiting in self._pending
                 if waiting.batch is not None and waiting.batch.group == job.batch.group][: job.batch.limit - 1]
        for mate in mates:
            self._pending.remove(mate)
            mate.taken = True
        return mates

    @staticmethod
    def _settle(job: Job) -> None:
        try:
            value = job.work()
        except Exception as exc:
            # The job reports failures to whoever waits (or on the card itself);
            # the worker thread never dies. No photo names or results are logged.
            log.debug("an inference job raised %s", type(exc).__name__)
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)

    @staticmethod
    def _settle_batch(jobs: list[Job]) -> None:
        """One run for several jobs (``Batchable.run`` of the first); a failure is every job's failure."""
        try:
            values = jobs[0].batch.run([each.batch.item for each in jobs])
            if len(values) != len(jobs):
                raise RuntimeError(f"a batch of {len(jobs)} jobs returned {len(values)} values")
        except Exception as exc:
            log.debug("a batch of %d inference jobs raised %s", len(jobs), type(exc).__name__)
            for each in jobs:
                each.future.set_exception(exc)
        else:
            for each, value in zip(jobs, values):
                each.future.set_result(value)


def _done() -> None:
    return None


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
