"""InferenceWorker: one job kind, bounded queue, positions, handles, cancellation, survives failures."""

from __future__ import annotations

import threading

import pytest

from webapp.worker import InferenceWorker, Job, QueueFull


def _wait_until_started(worker: InferenceWorker) -> None:
    for _ in range(500):
        if worker.current is not None:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the worker never started a job")


def test_queue_is_bounded_and_positions_are_reported():
    gate = threading.Event()
    handled = []

    def work(name):
        def run():
            gate.wait(5)
            handled.append(name)
        return run

    worker = InferenceWorker(maxsize=2)
    worker.start()
    first = worker.submit(Job("p1", work("p1")))
    _wait_until_started(worker)  # the queue now holds only what follows
    assert first.position() is None  # running, no longer queued
    second = worker.submit(Job("p2", work("p2")))
    assert second.position() == 1
    assert worker.submit(Job("p3", work("p3"))).position() == 2
    again = worker.submit(Job("p2", work("p2-again")))  # the same key is not queued twice
    assert again.position() == 1
    with pytest.raises(QueueFull):
        worker.submit(Job("p4", work("p4")))
    assert worker.position("p3") == 2
    # Several at once, from one reading (the running job and unknown keys have no place).
    assert worker.positions(["p1", "p2", "p3", "nope"]) == {"p2": 1, "p3": 2}
    gate.set()
    assert worker.join_idle(5)
    assert handled == ["p1", "p2", "p3"]
    assert worker.position("p3") is None
    assert second.done() and again.done()
    worker.stop()


def test_the_handle_returns_the_value_or_raises_the_jobs_exception():
    worker = InferenceWorker(maxsize=4)
    worker.start()
    good = worker.submit(Job("good", lambda: 6 * 7))

    def fail():
        raise RuntimeError("boom")

    bad = worker.submit(Job("bad", fail))
    assert good.result(5) == 42
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(5)
    # the worker survived the failing job
    assert worker.submit(Job("after", lambda: "still running")).result(5) == "still running"
    worker.stop()


def test_a_cancelled_job_never_runs_and_leaves_the_queue():
    gate = threading.Event()
    ran = []
    worker = InferenceWorker(maxsize=4)
    worker.start()
    worker.submit(Job("blocker", lambda: gate.wait(5)))
    _wait_until_started(worker)
    waiting = worker.submit(Job("given-up", lambda: ran.append("given-up")))
    behind = worker.submit(Job("behind", lambda: ran.append("behind")))
    assert behind.position() == 2
    with pytest.raises(TimeoutError):
        waiting.result(timeout=0.05)
    assert waiting.cancel()
    assert behind.position() == 1  # the cancelled job no longer counts
    gate.set()
    assert worker.join_idle(5)
    assert ran == ["behind"]
    worker.stop()


def test_the_worker_drops_the_callable_after_running_it():
    """A job's callable holds the caller's data (a frame): it must not outlive the job."""
    worker = InferenceWorker(maxsize=1)
    worker.start()
    job = Job("frame", lambda: "analysed")
    assert worker.submit(job).result(5) == "analysed"
    assert worker.join_idle(5)
    assert job.work() is None  # replaced by a no-op once it ran
    worker.stop()


def test_jobs_run_on_the_worker_thread_not_the_caller():
    worker = InferenceWorker(maxsize=1)
    worker.start()
    assert worker.submit(Job("p", lambda: threading.current_thread().name)).result(5) == "privascan-inference"
    worker.stop()
