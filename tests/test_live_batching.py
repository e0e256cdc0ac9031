"""Live frames of several sessions share one vision forward (issue 17): the worker's batches and the pipeline's.

The worker tests run the real InferenceWorker on plain callables (what a job
does is not the worker's business). The pipeline and jobs tests run the real
localizer, gates and tiny MedSigLIP (loaded with ``from_pretrained``): a frame
classified in a batch must score exactly as it does alone.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import make_lesion_photo
from webapp import jobs
from webapp.pipeline import analyse_frame, analyse_frames
from webapp.worker import Batchable, InferenceWorker, Job


def _hold(worker: InferenceWorker) -> threading.Event:
    """Keep the worker busy until the returned event is set, so that what is submitted next waits in the queue."""
    release, started = threading.Event(), threading.Event()

    def busy():
        started.set()
        release.wait(30)

    worker.submit(Job("hold", busy))
    assert started.wait(10), "the worker never started the holding job"
    return release


def _batchable(key, item, group, runs, limit=8):
    def run(items):
        runs.append(list(items))
        return [f"{each}!" for each in items]

    return Job(key, lambda: run([item])[0], batch=Batchable(group=group, item=item, run=run, limit=limit))


def test_waiting_jobs_of_one_group_run_as_one_batch_in_queue_order():
    worker = InferenceWorker(maxsize=16)
    worker.start()
    runs: list[list] = []
    release = _hold(worker)
    a = worker.submit(_batchable("a", "a", "frames", runs))
    photo = worker.submit(Job("photo", lambda: "photo done"))  # not batchable: runs on its own
    other = worker.submit(_batchable("x", "x", "other-app", runs))  # another group: its own batch
    b = worker.submit(_batchable("b", "b", "frames", runs))
    c = worker.submit(_batchable("c", "c", "frames", runs))
    assert worker.position("c") == 5
    release.set()
    assert [a.result(10), b.result(10), c.result(10)] == ["a!", "b!", "c!"]
    assert photo.result(10) == "photo done" and other.result(10) == "x!"
    assert worker.join_idle(10)
    assert runs == [["a", "b", "c"], ["x"]]  # b and c were taken into a's batch, ahead of the photo
    worker.stop()


def test_a_batch_holds_at_most_its_limit_and_the_rest_form_the_next():
    worker = InferenceWorker(maxsize=16)
    worker.start()
    runs: list[list] = []
    release = _hold(worker)
    handles = [worker.submit(_batchable(name, name, "frames", runs, limit=2)) for name in "abcde"]
    release.set()
    assert [handle.result(10) for handle in handles] == ["a!", "b!", "c!", "d!", "e!"]
    assert worker.join_idle(10)
    assert runs == [["a", "b"], ["c", "d"], ["e"]]
    worker.stop()


def test_a_cancelled_frame_is_left_out_and_a_failing_batch_fails_every_frame_in_it():
    worker = InferenceWorker(maxsize=16)
    worker.start()
    runs: list[list] = []
    release = _hold(worker)
    a = worker.submit(_batchable("a", "a", "frames", runs))
    gone = worker.submit(_batchable("gone", "gone", "frames", runs))
    b = worker.submit(_batchable("b", "b", "frames", runs))
    assert gone.cancel()  # its caller stopped waiting: it never runs
    release.set()
    assert [a.result(10), b.result(10)] == ["a!", "b!"] and runs == [["a", "b"]]

    def broken(items):
        raise RuntimeError("the model failed")

    release = _hold(worker)
    failing = [worker.submit(Job(name, lambda: None, batch=Batchable("frames", name, broken, 8))) for name in "pq"]
    after = worker.submit(Job("after", lambda: "still working"))
    release.set()
    for handle in failing:
        with pytest.raises(RuntimeError, match="the model failed"):
            handle.result(10)
    assert after.result(10) == "still working"  # the worker survives a failed batch
    worker.stop()


def test_a_job_run_in_a_batch_drops_its_frame_afterwards():
    worker = InferenceWorker(maxsize=4)
    worker.start()
    runs: list[list] = []
    release = _hold(worker)
    jobs_ = [_batchable(name, name, "frames", runs) for name in "ab"]
    handles = [worker.submit(job) for job in jobs_]
    release.set()
    assert [handle.result(10) for handle in handles] == ["a!", "b!"]
    assert worker.join_idle(10)
    assert all(job.batch is None for job in jobs_)  # the frame (the batch item) is not kept by the worker
    worker.stop()


# -- the pipeline and the jobs adapter, on the tiny model ------------------------------
def _frame(seed: int) -> Image.Image:
    image, _ = make_lesion_photo(seed, width=640, height=480, lesion_size=0.4)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def live_app(tiny_model_dir):
    from tests.helpers import make_app

    app = make_app(tiny_model_dir)
    yield app
    app.extensions["privascan_worker"].stop()


def test_frames_classified_together_score_as_each_frame_alone(live_app):
    registry = live_app.extensions["privascan_registry"]
    clinical_app = registry.app("dermatology")
    dark = Image.new("RGB", (640, 480), (8, 6, 5))  # refused by the quality gate: never reaches the model
    frames = [(_frame(1), None), (dark, None), (_frame(2), "dermoscopy")]
    with live_app.test_request_context():
        together = analyse_frames(frames, clinical_app, registry)
        alone = [analyse_frame(image, template_set, clinical_app, registry) for image, template_set in frames]
    assert [frame.view for frame in together] == [frame.view for frame in alone]
    assert together[1].view != "finding" and together[1].batch_size == 0
    assert [together[0].batch_size, together[2].batch_size] == [2, 2]  # one forward for the two that passed
    assert together[2].result.template_set_id == "dermoscopy"  # each frame scored with its own picture kind
    for batched, single in zip(together, alone):
        if batched.view == "finding":
            assert batched.probabilities.keys() == single.probabilities.keys()
            assert np.allclose(list(batched.probabilities.values()), list(single.probabilities.values()), atol=1e-5)
            assert np.allclose(batched.result.scores.embedding, single.result.scores.embedding, atol=1e-5)
            assert batched.result.triage.tier == single.result.triage.tier


def _frames_of_two_sessions(app) -> list:
    """Two sessions' frames submitted while the worker is busy, as two web threads would; their analyses."""
    worker = app.extensions["privascan_worker"]
    release = _hold(worker)
    analyses: dict[int, object] = {}

    def send(index: int) -> None:
        with app.test_request_context():
            analyses[index] = jobs.analyse_live_frame(_frame(index + 1), {}, timeout=60)[1]

    threads = [threading.Thread(target=send, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(500):
        if worker.pending() == 2:
            break
        threading.Event().wait(0.01)
    assert worker.pending() == 2, "both frames should be waiting behind the busy worker"
    release.set()
    for thread in threads:
        thread.join(60)
    return [analyses[0], analyses[1]]


def test_waiting_frames_of_two_sessions_share_a_forward_when_batching_is_on(app_factory):
    app = app_factory(LIVE_BATCH=4)
    first, second = _frames_of_two_sessions(app)
    assert first.view == second.view == "finding"
    assert first.batch_size == second.batch_size == 2


def test_on_a_cpu_frames_are_not_batched_by_default(app_factory):
    app = app_factory()
    assert app.config["LIVE_BATCH"] == "auto"
    classifier = app.extensions["privascan_registry"].classifiers["medsiglip"]
    assert classifier.device == "cpu" and jobs.live_batch_limit(app.config, classifier) == 1
    first, second = _frames_of_two_sessions(app)
    assert first.batch_size == second.batch_size == 1


def test_the_batch_setting_is_checked_at_start_up(monkeypatch):
    from webapp.config import config_from_environment

    monkeypatch.setenv("PRIVASCAN_LIVE_BATCH", "8")
    assert config_from_environment()["LIVE_BATCH"] == 8
    monkeypatch.setenv("PRIVASCAN_LIVE_BATCH", "lots")
    with pytest.raises(ValueError, match="PRIVASCAN_LIVE_BATCH must be 'auto' or a whole number"):
        config_from_environment()
