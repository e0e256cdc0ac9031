"""InferenceWorker: bounded queue, positions, one thread, survives failing jobs."""

from __future__ import annotations

import threading

import pytest

from webapp.worker import InferenceWorker, Job, QueueFull


def test_queue_is_bounded_and_positions_are_reported():
    gate = threading.Event()
    handled = []

    def handler(job):
        gate.wait(5)
        handled.append(job.photo_id)

    worker = InferenceWorker(handler, maxsize=2)
    worker.start()
    first = Job("s", "p1")
    assert worker.submit(first) == 1
    # Wait until the worker took p1, so the queue holds only what follows.
    for _ in range(100):
        if worker.current is not None:
            break
        threading.Event().wait(0.01)
    assert worker.submit(Job("s", "p2")) == 1
    assert worker.submit(Job("s", "p3")) == 2
    assert worker.submit(Job("s", "p2")) == 1  # the same job is not queued twice
    with pytest.raises(QueueFull):
        worker.submit(Job("s", "p4"))
    assert worker.position("s", "p3") == 2
    gate.set()
    assert worker.join_idle(5)
    assert handled == ["p1", "p2", "p3"]
    assert worker.position("s", "p3") is None
    worker.stop()


def test_a_failing_job_does_not_stop_the_worker():
    handled = []

    def handler(job):
        if job.photo_id == "bad":
            raise RuntimeError("boom")
        handled.append(job.photo_id)

    worker = InferenceWorker(handler, maxsize=4)
    worker.start()
    worker.submit(Job("s", "bad"))
    worker.submit(Job("s", "good"))
    assert worker.join_idle(5)
    assert handled == ["good"]
    worker.stop()


def test_jobs_run_on_the_worker_thread_not_the_caller():
    threads = []
    worker = InferenceWorker(lambda job: threads.append(threading.current_thread().name), maxsize=1)
    worker.start()
    worker.submit(Job("s", "p"))
    assert worker.join_idle(5)
    assert threads == ["privascan-inference"]
    worker.stop()
