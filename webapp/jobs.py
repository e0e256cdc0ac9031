"""The one adapter between the views and the inference worker.

A view asks for work here and gets either a queue position (photos: the card
polls for the result) or the work's value within a timeout (the JSON API,
live frames and their heatmaps). Every job is a key and a callable built from
``webapp.pipeline``; this module owns the one readiness check, puts photo
results back into the session store, and turns the worker's failures into
exceptions with a message a person can read.
"""

from __future__ import annotations

import logging
import secrets
from functools import partial
from typing import Any, Callable

from flask import Flask, current_app
from flask_babel import gettext
from PIL import Image

from .i18n import N_, Message, translate

from .images import open_clean
from .interfaces import ClinicalApp
from .pipeline import (
    AnalysisResult, FrameAnalysis, Heatmap, analyse_frame, analyse_frames, analyse_image, crop_size, explain_condition, explain_jpeg_crop,
    heatmap_allowance, result_allowance,
)
from .plugins import Registry
from .store import Photo, SessionData
from .worker import Batchable, InferenceWorker, Job, QueueFull

log = logging.getLogger(__name__)


class NotReady(Exception):
    """The model cannot analyse yet; the words are made when a request shows them (its language)."""

    def __init__(self, status):
        super().__init__(str(status.message))
        self.status = status

    def _reason(self) -> str:
        return " ".join(part for part in (translate(self.status.message), translate(self.status.advice)) if part)

    @property
    def message(self) -> str:
        return gettext("Analysis is not available yet: %(reason)s", reason=self._reason())

    @property
    def live_message(self) -> str:
        return gettext("Live scan is not available yet: %(reason)s", reason=self._reason())


class WorkerTimeout(Exception):
    @property
    def message(self) -> str:
        return gettext("The analyser is busy with other work. Please try again in a moment.")


OVERDUE = Message(N_("The analysis did not finish in time: the analyser working on it stopped. Please try again."))


def init_app(app: Flask) -> None:
    if app.extensions.get("privascan_redis") is not None:
        from . import remote_jobs

        remote_jobs.init_app(app)  # scale-out mode: Celery workers instead of this process's thread
        return
    worker = InferenceWorker(maxsize=app.config["QUEUE_SIZE"])
    app.extensions["privascan_worker"] = worker
    worker.start()


def clinical_app_for(settings: dict) -> ClinicalApp:
    """The clinical app a session chose (its ``app`` setting), else the server's default."""
    registry = current_app.extensions["privascan_registry"]
    return registry.app(settings.get("app") or current_app.config["CLINICAL_APP"])


def ready_clinical_app(settings: dict) -> ClinicalApp:
    """The session's clinical app, once its classifier can analyse; raises NotReady saying why not."""
    clinical_app = clinical_app_for(settings)
    status = current_app.extensions["privascan_models"].status(clinical_app.classifier)
    if not status.ready:
        raise NotReady(status)
    return clinical_app


def _worker() -> InferenceWorker:
    return current_app.extensions["privascan_worker"]


# -- photos of the session: queued, the card polls -------------------------------
def photo_job_key(store_id: str, photo_id: str, kind: str = "analyse") -> tuple[str, str, str]:
    return (store_id, photo_id, kind)


def queue_position(store_id: str, photo_id: str) -> int | None:
    """A queued photo analysis's 1-based place in the queue (None once it started)."""
    return _worker().position(photo_job_key(store_id, photo_id))


def settle_overdue(data: SessionData | None) -> None:
    """Mark as failed each photo whose job started but is past its deadline, so no card says "running" forever.

    Only scale-out workers can vanish mid-job (``InferenceWorker.overdue``
    is always False). "queued" too: a worker may stop between taking the job
    and saying "running". The change is conditional: a result that arrived
    meanwhile is kept.
    """
    if data is None:
        return
    waiting = [photo for photo in data.photos.values() if photo.state in ("queued", "running")]
    if not waiting:
        return
    store = current_app.extensions["privascan_store"]
    late = _worker().overdue_keys([photo_job_key(data.id, photo.id) for photo in waiting])  # one round trip
    for photo in waiting:
        if photo_job_key(data.id, photo.id) in late:
            failed = {"state": "error", "stage": "", "error": OVERDUE}
            if store.update_photo(data.id, photo.id, secret=data.secret, if_state=photo.state, **failed):
                _set(photo, failed)


def heatmap_overdue(data: SessionData, photo: Photo, condition_id: str) -> bool:
    """Whether the extra heatmap for ``condition_id`` started on a worker that never came back (past its deadline)."""
    return _worker().overdue(photo_job_key(data.id, photo.id, f"explain:{condition_id}"))


def _set(photo: Photo, changes: dict) -> None:
    for name, value in changes.items():
        setattr(photo, name, value)


def queue_positions(store_id: str, photo_ids) -> dict[str, int]:
    """The queue places of several photos' analyses, all read at one moment (photo id -> 1-based place)."""
    keys = {photo_job_key(store_id, photo_id): photo_id for photo_id in photo_ids}
    return {keys[key]: place for key, place in _worker().positions(keys).items()}


def queue_analysis(data: SessionData, photo: Photo, settings: dict, analyse_anyway: bool = False) -> int:
    """Queue a photo's full analysis (scores and heatmap); returns its position.

    ``analyse_anyway``: the user asked to run the model although the quality
    gate failed; the result is then marked low quality.
    """
    clinical_app = ready_clinical_app(settings)
    # data.secret: scale-out mode's session key, reaching the worker only inside this job (None embedded).
    work = partial(_analyse_stored_photo, current_app._get_current_object(), data.id, photo.id,
                   clinical_app.name, settings.get("template_set"), data.secret, analyse_anyway)
    store = current_app.extensions["privascan_store"]
    # Room for the result (crop, heatmap) is claimed in the caps now, so queued jobs cannot overshoot them.
    store.claim_room(data, photo, "analyse", result_allowance(crop_size(clinical_app, current_app.extensions["privascan_registry"])))
    before = {"state": photo.state, "stage": photo.stage, "error": photo.error}
    # Marked queued before it can start: the worker's "running" and "done" always come after.
    queued = {"state": "queued", "stage": "", "error": ""}
    store.update_photo(data.id, photo.id, secret=data.secret, **queued)
    _set(photo, queued)  # this request's copy too: the Redis store's is separate, and the card rendered now must poll
    try:
        handle = _worker().submit(Job(photo_job_key(data.id, photo.id), work))
    except QueueFull:
        store.update_photo(data.id, photo.id, secret=data.secret, **before)
        _set(photo, before)
        store.release_room(data.id, photo.id, "analyse", secret=data.secret)
        raise
    return handle.position() or 1


def queue_extra_heatmap(data: SessionData, photo: Photo, settings: dict, condition_id: str) -> int:
    """Queue a heatmap for another condition of an analysed photo; returns its position."""
    ready_clinical_app(settings)  # only the readiness check: the heatmap follows the result's own modality
    registry = current_app.extensions["privascan_registry"]
    store = current_app.extensions["privascan_store"]
    kind = f"explain:{condition_id}"
    store.claim_room(data, photo, kind, heatmap_allowance(crop_size(registry.app(photo.result.app_name), registry)))
    work = partial(_explain_stored_photo, current_app._get_current_object(), data.id, photo.id, condition_id,
                   data.secret, not settings.get("adapter_off"))
    try:
        handle = _worker().submit(Job(photo_job_key(data.id, photo.id, kind), work))
    except QueueFull:
        store.release_room(data.id, photo.id, kind, secret=data.secret)
        raise
    return handle.position() or 1


def _analyse_stored_photo(app: Flask, store_id: str, photo_id: str, app_name: str, template_set_id: str | None,
                          secret: bytes | None = None, analyse_anyway: bool = False) -> None:
    """Runs on the worker: the photo is read from the store, the result written back if the photo still exists."""
    store = app.extensions["privascan_store"]
    registry: Registry = app.extensions["privascan_registry"]
    photo = store.get_photo(store_id, photo_id, touch=False, secret=secret)
    if photo is None:  # deleted (or its session ended) while it waited
        return
    update = partial(store.update_photo, store_id, photo_id, secret=secret)
    try:
        update(state="running", stage="starting")
        result = analyse_image(
            open_clean(photo.jpeg), registry.app(app_name), registry, template_set_id=template_set_id,
            explain=True, on_stage=lambda stage: update(stage=stage),
            analyse_anyway=analyse_anyway, demo=bool(app.config.get("DEMO_MODEL")),
        )
        update(state="done", stage="", result=result, extra_heatmaps={})
    except Exception:
        _report_failure(update)
    finally:
        store.release_room(store_id, photo_id, "analyse", secret=secret)  # its real bytes count from now on


def _explain_stored_photo(app: Flask, store_id: str, photo_id: str, condition_id: str, secret: bytes | None = None,
                          use_adapter: bool = True) -> None:
    store = app.extensions["privascan_store"]
    registry: Registry = app.extensions["privascan_registry"]
    photo = store.get_photo(store_id, photo_id, touch=False, secret=secret)
    if photo is None or photo.result is None:
        store.release_room(store_id, photo_id, f"explain:{condition_id}", secret=secret)
        return
    update = partial(store.update_photo, store_id, photo_id, secret=secret)
    try:
        result: AnalysisResult = photo.result
        heatmap = explain_condition(
            open_clean(photo.jpeg), result, condition_id, registry.app(result.app_name), registry, use_adapter=use_adapter
        )
        update(extra_heatmaps={**photo.extra_heatmaps, condition_id: heatmap.png})
    except Exception:
        _report_failure(update)
    finally:
        store.release_room(store_id, photo_id, f"explain:{condition_id}", secret=secret)


def _report_failure(update: Callable[..., Any]) -> None:
    incident = secrets.token_hex(4)
    log.exception("incident %s: analysis job failed", incident)
    update(state="error", stage="", error=Message(N_("The analysis failed (incident %(incident)s). Please try again."),
                                                  incident=incident))


# -- work a request waits for ----------------------------------------------------
def _wait(clinical_app: ClinicalApp, work: Callable[[ClinicalApp, Registry], Any], timeout: float,
          batch: Batchable | None = None) -> Any:
    """Run ``work(clinical_app, registry)`` on the worker and wait up to ``timeout`` seconds.

    The caller's data (an image, a frame, a crop) travels inside ``work`` and
    is dropped by the worker once it has run. On timeout the job is
    cancelled, so a job nobody waits for any more never runs, and
    WorkerTimeout is raised (a job already running finishes, unread).
    ``batch``: how the worker may run it together with other waiting jobs.
    """
    registry = current_app.extensions["privascan_registry"]
    handle = _worker().submit(Job(("wait", secrets.token_hex(8)), partial(work, clinical_app, registry), batch=batch))
    try:
        return handle.result(timeout)
    except TimeoutError:
        handle.cancel()
        raise WorkerTimeout() from None


def analyse_once(
    image: Image.Image, settings: dict, explain: bool, timeout: float, analyse_anyway: bool = False
) -> tuple[ClinicalApp, AnalysisResult]:
    """One stateless analysis (the JSON API): nothing is kept after the response."""
    clinical_app = ready_clinical_app(settings)
    work = partial(_analyse_given_image, image, settings.get("template_set"), explain, not settings.get("adapter_off"),
                   analyse_anyway, bool(current_app.config.get("DEMO_MODEL")))
    return clinical_app, _wait(clinical_app, work, timeout)


def _analyse_given_image(image, template_set_id, explain, use_adapter, analyse_anyway, demo, clinical_app,
                         registry) -> AnalysisResult:
    return analyse_image(image, clinical_app, registry, template_set_id=template_set_id, explain=explain,
                         use_adapter=use_adapter, analyse_anyway=analyse_anyway, demo=demo)


def analyse_live_frame(image: Image.Image, settings: dict, timeout: float) -> tuple[ClinicalApp, FrameAnalysis]:
    """One live frame, waited for; it may share its vision forward with other sessions' waiting frames."""
    clinical_app = ready_clinical_app(settings)
    template_set_id = settings.get("template_set")
    limit = live_batch_limit(current_app.config, current_app.extensions["privascan_registry"].classifiers[clinical_app.classifier])
    batch = None
    if limit > 1:
        run = partial(_analyse_frames, clinical_app, current_app.extensions["privascan_registry"])
        batch = Batchable(group=("frames", clinical_app.name), item=(image, template_set_id), run=run, limit=limit)
    return clinical_app, _wait(clinical_app, partial(analyse_frame, image, template_set_id), timeout, batch=batch)


def _analyse_frames(clinical_app: ClinicalApp, registry: Registry, frames: list) -> list[FrameAnalysis]:
    return analyse_frames(frames, clinical_app, registry)


LIVE_BATCH_ON_GPU = 8


def live_batch_limit(config, classifier) -> int:
    """How many waiting live frames (of any sessions) the worker classifies in one forward.

    PRIVASCAN_LIVE_BATCH sets it; by default ("auto") frames are batched on
    a GPU only, where eight frames cost little more than one. On a CPU a
    batch costs the sum of its frames (``python -m bench.pipeline`` measures
    it on the host), so batching would only make the first frame wait for
    the others.
    """
    setting = config.get("LIVE_BATCH", "auto")
    if setting != "auto":
        return max(1, int(setting))
    return LIVE_BATCH_ON_GPU if getattr(classifier, "device", None) == "cuda" else 1


def explain_live_crop(crop_jpeg: bytes, template_set_id: str | None, condition_id: str | None,
                      settings: dict, timeout: float) -> Heatmap:
    clinical_app = ready_clinical_app(settings)
    return _wait(clinical_app, partial(explain_jpeg_crop, crop_jpeg, template_set_id, condition_id), timeout)


__all__ = [
    "NotReady", "QueueFull", "WorkerTimeout", "analyse_live_frame", "analyse_once", "clinical_app_for",
    "explain_live_crop", "heatmap_overdue", "init_app", "queue_analysis", "queue_extra_heatmap", "queue_position",
    "queue_positions", "ready_clinical_app", "settle_overdue",
]
