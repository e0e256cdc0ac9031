"""What the inference worker does with a job, and how views hand jobs to it.

The worker thread runs ``run_job``; it reads the photo from the session store,
runs the pipeline and writes the result back only if the session and photo
still exist (a user may delete them while the job runs).
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import Future
from functools import partial

from flask import Flask, current_app

from .images import open_clean
from .pipeline import analyse_image, explain_condition
from .store import Photo, SessionData
from .worker import InferenceWorker, Job, QueueFull

log = logging.getLogger(__name__)


class NotReady(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def init_app(app: Flask) -> None:
    worker = InferenceWorker(partial(run_job, app), maxsize=app.config["QUEUE_SIZE"])
    app.extensions["privascan_worker"] = worker
    worker.start()


def clinical_app_for(settings: dict):
    registry = current_app.extensions["privascan_registry"]
    return registry.app(settings.get("app") or current_app.config["CLINICAL_APP"])


def enqueue(data: SessionData, photo: Photo, settings: dict, kind: str = "analyze", **options) -> int:
    """Queue a photo for the worker; raises NotReady or QueueFull with a readable message."""
    record = clinical_app_for(settings)
    status = current_app.extensions["privascan_models"].status(record.classifier)
    if not status.ready:
        raise NotReady(f"Analysis is not available yet: {status.message} {status.advice}".strip())
    options = {"app": record.name, "template_set": settings.get("template_set"), **options}
    position = current_app.extensions["privascan_worker"].submit(Job(data.id, photo.id, kind, options))
    if kind == "analyze":
        current_app.extensions["privascan_store"].update_photo(data.id, photo.id, state="queued", stage="", error="")
    return position


def run_job(app: Flask, job: Job) -> None:
    if job.kind == "call":
        _run_call_job(job, app.extensions["privascan_registry"])
        return
    store = app.extensions["privascan_store"]
    registry = app.extensions["privascan_registry"]
    photo = store.get_photo(job.store_id, job.photo_id, touch=False) if job.kind != "api" else None
    if photo is None and job.kind != "api":  # deleted while it waited
        return
    record = registry.app(job.options.get("app"))
    if job.kind == "api":
        _run_api_job(job, record, registry)
        return
    update = partial(store.update_photo, job.store_id, job.photo_id)
    try:
        image = open_clean(photo.jpeg)
        if job.kind == "analyze":
            update(state="running", stage="starting")
            result = analyse_image(
                image,
                record,
                registry,
                template_set_id=job.options.get("template_set"),
                explain=True,
                on_stage=lambda stage: update(stage=stage),
            )
            update(state="done", stage="", result=result, extra_heatmaps={})
        elif job.kind == "explain" and photo.result is not None:
            condition_id = job.options["condition_id"]
            png = explain_condition(image, photo.result, condition_id, record, registry)
            update(extra_heatmaps={**photo.extra_heatmaps, condition_id: png})
    except Exception:
        incident = secrets.token_hex(4)
        log.exception("incident %s: analysis job failed", incident)
        update(state="error", stage="", error=f"The analysis failed (incident {incident}). Please try again.")


def analyse_now(image, settings: dict, explain: bool, timeout: float = 600.0):
    """Run one stateless analysis on the worker and wait for it (the JSON API).

    The image travels inside the job and is dropped with it: nothing is kept
    after the response.
    """
    record = clinical_app_for(settings)
    status = current_app.extensions["privascan_models"].status(record.classifier)
    if not status.ready:
        raise NotReady(f"Analysis is not available yet: {status.message} {status.advice}".strip())
    future: Future = Future()
    job = Job("api", secrets.token_hex(8), "api", {"app": record.name, "template_set": settings.get("template_set"),
                                                    "image": image, "explain": explain, "future": future})
    current_app.extensions["privascan_worker"].submit(job)
    return record, future.result(timeout=timeout)


def _run_api_job(job: Job, record, registry) -> None:
    future: Future = job.options["future"]
    try:
        result = analyse_image(
            job.options["image"], record, registry, template_set_id=job.options.get("template_set"),
            explain=job.options["explain"],
        )
    except Exception as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


class WorkerTimeout(Exception):
    message = "The analyser is busy with other work. Please try again in a moment."


def run_on_worker(settings: dict, work, timeout: float):
    """Run ``work(record, registry)`` on the inference worker and return ``(record, its value)``.

    For live scan frames and heatmaps: the caller's data travels inside
    ``work`` and is dropped by the worker once it has run. Raises NotReady,
    QueueFull or WorkerTimeout (a job that has not started by then is
    cancelled and never runs).
    """
    record = clinical_app_for(settings)
    status = current_app.extensions["privascan_models"].status(record.classifier)
    if not status.ready:
        raise NotReady(f"Analysis is not available yet: {status.message} {status.advice}".strip())
    future: Future = Future()
    job = Job("call", secrets.token_hex(8), "call", {"work": partial(work, record), "future": future})
    current_app.extensions["privascan_worker"].submit(job)
    try:
        return record, future.result(timeout=timeout)
    except TimeoutError:
        future.cancel()
        raise WorkerTimeout() from None


def _run_call_job(job: Job, registry) -> None:
    # Pop both, so the worker's last-job reference keeps nothing of the caller's data.
    work = job.options.pop("work")
    future: Future = job.options.pop("future")
    if not future.set_running_or_notify_cancel():  # the caller gave up waiting
        return
    try:
        result = work(registry)
    except Exception as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


__all__ = ["analyse_now", "enqueue", "NotReady", "QueueFull", "run_job", "run_on_worker", "WorkerTimeout"]
