"""The job seam's second implementation: Celery workers on the Redis broker.

``webapp.worker.InferenceWorker`` runs a job (a key and a callable built by
``webapp.jobs``) on a thread of this process. ``RemoteWorker`` has the same
``submit(job) -> handle`` interface and runs it in a ``privascan worker``
process, on this machine or another:

* the callable is pickled, with the Flask app and the plugin registry
  replaced by references the worker fills with its own, then sealed with a
  one-off key (AES-GCM) and stored in Redis for at most ``JOB_DATA_TTL``;
* the Celery message carries only the job's id, its queue key and the
  one-off key wrapped under PRIVASCAN_SECRET_KEY: keys, never image bytes;
* a job somebody waits for (JSON API, live frame, live heatmap) gets its
  outcome back sealed with the same one-off key on a Redis list, which the
  waiting replica pops (BLPOP: it wakes at once, no polling).

A deadline backs that up: a worker starting a photo job notes, in one
sorted set, when it must have finished (Redis's clock, so machines' clocks
need not agree); a card whose photo is still "running" past it says the
analysis failed. By default the deadline is the visibility timeout plus a
minute, so a redelivery to a live worker (which notes a new deadline) comes
first; with no worker left to take the job over, the card fails instead of
saying "running" forever.

Only holders of PRIVASCAN_SECRET_KEY can make a job a worker will unpickle:
the seal is checked before anything is loaded.

Celery settings: ``acks_late`` with ``reject_on_worker_lost`` and a
visibility timeout, so a worker killed mid-job leaves its message to be
delivered again to another worker; prefetch 1, so a busy worker does not
hoard jobs. Live frames go to their own queue, which workers read first
(``queue_order_strategy: priority``), so a batch of photos never starves a
live scan. Queue places and the queue bound live in a sorted set per queue,
shared by every replica.
"""

from __future__ import annotations

import io
import logging
import pickle
import secrets
import time
from typing import Any, Hashable

import redis
from celery import Celery
from flask import Flask

from .session_crypto import new_key, seal, unseal, unwrap_from_job, wrap_for_job
from .worker import Job, QueueFull

log = logging.getLogger(__name__)

PHOTO_QUEUE = "privascan.photos"
LIVE_QUEUE = "privascan.live"
QUEUES = (LIVE_QUEUE, PHOTO_QUEUE)  # read in this order by each worker
LIVE_WORK = {"analyse_frame", "explain_jpeg_crop"}
JOB_DATA_TTL = 3600
RESULT_TTL = 300
TASK_NAME = "privascan.run_job"
RUNNING_KEY = "privascan:running"  # sorted set: a started photo job's queue member -> its deadline
DEADLINE_MARGIN = 60


def job_deadline_seconds(config) -> int:
    """How long a photo job may run before its card says it failed (see the module's docstring)."""
    return int(config.get("JOB_DEADLINE_SECONDS") or 0) or int(config.get("JOB_VISIBILITY_SECONDS", 600)) + DEADLINE_MARGIN


def redis_now(client: redis.Redis) -> float:
    """Redis's clock: every replica and worker compares deadlines against the same one."""
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


def _queue_set(queue: str) -> str:
    return f"privascan:queue:{queue}"


def _job_data(job_id: str) -> str:
    return f"privascan:job:{job_id}"


def _job_outcome(job_id: str) -> str:
    return f"privascan:outcome:{job_id}"


# -- pickling a job without the process it came from ------------------------------
class _JobPickler(pickle.Pickler):
    """Pickle a job's callable, leaving the Flask app and the registry behind as references."""

    def persistent_id(self, obj):
        from .plugins import Registry

        if isinstance(obj, Flask):
            return "flask-app"
        if isinstance(obj, Registry):
            return "registry"
        return None


class _JobUnpickler(pickle.Unpickler):
    def __init__(self, file, app: Flask):
        super().__init__(file)
        self._app = app

    def persistent_load(self, pid):
        if pid == "flask-app":
            return self._app
        if pid == "registry":
            return self._app.extensions["privascan_registry"]
        raise pickle.UnpicklingError("unknown reference in a job")


def dumps_job(work) -> bytes:
    buffer = io.BytesIO()
    _JobPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(work)
    return buffer.getvalue()


def loads_job(raw: bytes, app: Flask):
    return _JobUnpickler(io.BytesIO(raw), app).load()


def job_kind(job: Job) -> str:
    """The work's function name (for queues, heartbeats and metrics; never its arguments)."""
    return getattr(getattr(job.work, "func", job.work), "__name__", "job")


# -- Celery -------------------------------------------------------------------------
def make_celery(app: Flask) -> Celery:
    url = app.config["REDIS_URL"]
    visibility = int(app.config.get("JOB_VISIBILITY_SECONDS", 600))
    celery = Celery("privascan", broker=url, set_as_current=False)
    celery.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True,  # outcomes travel sealed on our own list, never in a result backend
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility, "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        task_default_queue=PHOTO_QUEUE,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if url.startswith("rediss://"):
        celery.conf.broker_use_ssl = {"ssl_cert_reqs": "required"}
    celery.task(name=TASK_NAME, bind=True)(_run_job_task)
    celery.flask_app = app
    return celery


def _run_job_task(task, job_id: str, wrapped_key: str, queue: str, member: str, wants_outcome: bool) -> None:
    """Runs in ``privascan worker``: unseal the job, run it, seal the outcome back."""
    app: Flask = task.app.flask_app
    client: redis.Redis = app.extensions["privascan_redis"]
    heartbeat = app.extensions.get("privascan_heartbeat")
    client.zrem(_queue_set(queue), member)  # started: off the queue its cards count
    sealed = client.get(_job_data(job_id))
    if sealed is None:  # cancelled by its caller, or its data expired: dropped without error
        return
    job_key = unwrap_from_job(app.config["SECRET_KEY"], wrapped_key, job_id)
    work = loads_job(unseal(job_key, sealed, f"job/{job_id}"), app)
    kind = getattr(getattr(work, "func", work), "__name__", "job")
    if not wants_outcome:  # a photo job: its card polls, and must not say "running" past this
        now = redis_now(client)
        with client.pipeline() as pipe:
            pipe.zadd(RUNNING_KEY, {member: now + job_deadline_seconds(app.config)})
            pipe.zremrangebyscore(RUNNING_KEY, "-inf", now - JOB_DATA_TTL)  # killed jobs' old entries
            pipe.execute()
    if heartbeat is not None:
        heartbeat.current = kind
        heartbeat.beat()
    started = time.perf_counter()
    try:
        with app.app_context():
            outcome = ("ok", work())
    except Exception as exc:  # the waiting request re-raises it; photo jobs report on their card
        outcome = ("error", exc)
    finally:
        del work
        if not wants_outcome:
            client.zrem(RUNNING_KEY, member)
        from .memory import release_freed_memory

        release_freed_memory()
        if heartbeat is not None:
            heartbeat.current = ""
            heartbeat.jobs_done += 1
            heartbeat.beat()
    from .metrics import record_job

    record_job(client, kind, time.perf_counter() - started)
    if wants_outcome:
        try:
            raw = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that cannot travel: say what it was
            raw = pickle.dumps(("error", RuntimeError(type(outcome[1]).__name__)))
        with client.pipeline() as pipe:
            pipe.rpush(_job_outcome(job_id), seal(job_key, raw, f"outcome/{job_id}"))
            pipe.expire(_job_outcome(job_id), RESULT_TTL)
            pipe.execute()
    # Only once all is done: a worker killed before this line leaves the data for the redelivery.
    client.delete(_job_data(job_id))


# -- the web replica's side ------------------------------------------------------------
class RemoteJobHandle:
    """The ``JobHandle`` interface for a job running on a Celery worker."""

    def __init__(self, worker: "RemoteWorker", key: Hashable, job_id: str, job_key: bytes | None, queue: str):
        self._worker, self.key, self._job_id, self._job_key, self._queue = worker, key, job_id, job_key, queue

    def result(self, timeout: float | None = None) -> Any:
        if self._job_key is None:
            raise RuntimeError("this job's outcome is only known to the replica that submitted it")
        popped = self._worker.blocking.blpop([_job_outcome(self._job_id)], timeout=int(max(1, timeout or 0)))
        if popped is None:
            raise TimeoutError()
        status, value = pickle.loads(unseal(self._job_key, popped[1], f"outcome/{self._job_id}"))
        if status == "error":
            raise value
        return value

    def cancel(self) -> bool:
        """Drop the job if no worker has started it; True when it will never run."""
        client = self._worker.client
        if client.zrem(_queue_set(self._queue), self._worker.member(self.key)):
            client.delete(_job_data(self._job_id))
            return True
        return False

    def done(self) -> bool:
        return bool(self._worker.client.exists(_job_outcome(self._job_id))) or not self._worker.client.exists(
            _job_data(self._job_id))

    def position(self) -> int | None:
        return self._worker.position(self.key)


class RemoteWorker:
    """``InferenceWorker``'s interface, backed by Celery: jobs run in ``privascan worker`` processes."""

    current = None  # what runs is in the workers' heartbeats

    def __init__(self, app: Flask, celery: Celery, client: redis.Redis, maxsize: int):
        from .redis_connection import connect

        self.app, self.celery, self.client, self.maxsize = app, celery, client, maxsize
        # BLPOP may wait longer than the normal client's socket timeout.
        self.blocking = connect(app.config["REDIS_URL"], socket_timeout=None)

    @staticmethod
    def member(key: Hashable) -> str:
        return repr(key)

    def _queue_for(self, job: Job) -> str:
        return LIVE_QUEUE if job_kind(job) in LIVE_WORK else PHOTO_QUEUE

    def start(self) -> None:
        pass

    def submit(self, job: Job) -> RemoteJobHandle:
        queue = self._queue_for(job)
        members = _queue_set(queue)
        member = self.member(job.key)
        waiting_id = self.client.hget(members + ":ids", member)
        if waiting_id is not None and self.client.zscore(members, member) is not None:
            return RemoteJobHandle(self, job.key, waiting_id.decode(), None, queue)  # already queued, not twice
        if self.client.zcard(members) >= self.maxsize:
            raise QueueFull()
        job_id = secrets.token_urlsafe(16)
        job_key = new_key()
        wants_outcome = bool(isinstance(job.key, tuple) and job.key and job.key[0] == "wait")
        sealed = seal(job_key, dumps_job(job.work), f"job/{job_id}")
        try:
            with self.client.pipeline() as pipe:
                pipe.set(_job_data(job_id), sealed, ex=JOB_DATA_TTL)
                pipe.zrem(RUNNING_KEY, member)  # an earlier run's deadline does not apply to this one
                pipe.zadd(members, {member: time.time()})
                pipe.hset(members + ":ids", member, job_id)
                pipe.expire(members + ":ids", JOB_DATA_TTL)
                pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            raise QueueFull() from None
        try:
            self.celery.send_task(
                TASK_NAME, queue=queue,
                args=[job_id, wrap_for_job(self.app.config["SECRET_KEY"], job_key, job_id), queue, member, wants_outcome],
            )
        except Exception:
            self.client.zrem(members, member)
            self.client.delete(_job_data(job_id))
            raise
        return RemoteJobHandle(self, job.key, job_id, job_key, queue)

    def position(self, key: Hashable) -> int | None:
        member = self.member(key)
        for queue in QUEUES:
            rank = self.client.zrank(_queue_set(queue), member)
            if rank is not None:
                return rank + 1
        return None

    def positions(self, keys) -> dict:
        """``position`` for several jobs in one MULTI, so the places come from the same moment."""
        keys = list(keys)
        with self.client.pipeline(transaction=True) as pipe:
            for key in keys:
                for queue in QUEUES:
                    pipe.zrank(_queue_set(queue), self.member(key))
            ranks = pipe.execute()
        places = {}
        for index, key in enumerate(keys):
            found = [rank for rank in ranks[index * len(QUEUES):(index + 1) * len(QUEUES)] if rank is not None]
            if found:
                places[key] = found[0] + 1
        return places

    def pending(self) -> int:
        return sum(int(self.client.zcard(_queue_set(queue))) for queue in QUEUES)

    def overdue(self, key: Hashable) -> bool:
        """Whether the photo job with this key started and is past its deadline (its worker never came back)."""
        return key in self.overdue_keys([key])

    def overdue_keys(self, keys: list) -> set:
        """Those of ``keys`` whose job started and is past its deadline; one round trip for a whole timeline."""
        if not keys:
            return set()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zmscore(RUNNING_KEY, [self.member(key) for key in keys])
            (seconds, microseconds), deadlines = pipe.execute()
        now = seconds + microseconds / 1e6
        return {key for key, deadline in zip(keys, deadlines) if deadline is not None and deadline < now}

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def join_idle(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0 and not any(w["current"] for w in self.app.extensions["privascan_models"].workers()):
                return True
            time.sleep(0.2)
        return False


def init_app(app: Flask) -> None:
    """Scale-out mode: a web replica submits to Celery and reads the workers' heartbeats."""
    from .fleet import FleetStatus

    client = app.extensions["privascan_redis"]
    celery = make_celery(app)
    app.extensions["privascan_celery"] = celery
    if app.config.get("ROLE") == "worker":
        return  # `privascan worker` loads the model and consumes the queues itself
    app.extensions["privascan_models"] = FleetStatus(client, app.extensions["privascan_registry"])
    app.extensions["privascan_worker"] = RemoteWorker(app, celery, client, maxsize=app.config["QUEUE_SIZE"])
