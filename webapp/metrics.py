"""Prometheus metrics (prometheus-client): queue depth, job seconds by kind, sessions, bytes held, workers.

``/metrics`` on every web replica. In scale-out mode every figure is read
from Redis when scraped, so any replica answers for the whole fleet: the
queues' sorted sets, the session index, Redis's own memory figure, the live
heartbeats, and the job seconds the workers add up in one Redis hash per
kind. Embedded, the same names describe this one process. Only counts and
seconds: nothing about any person or photo.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

JOB_SUM = "privascan:metrics:job_seconds_sum"
JOB_COUNT = "privascan:metrics:job_seconds_count"

bp = Blueprint("metrics", __name__)


def record_job(client, kind: str, seconds: float) -> None:
    """A worker's finished job, added to the fleet's totals in Redis."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrbyfloat(JOB_SUM, kind, seconds)
        pipe.hincrby(JOB_COUNT, kind, 1)
        pipe.execute()


class _Collector:
    def __init__(self, app):
        self.app = app

    def collect(self):
        app = self.app
        store = app.extensions["privascan_store"]
        client = app.extensions.get("privascan_redis")
        depth = GaugeMetricFamily("privascan_queue_depth", "Jobs waiting for a worker", labels=["queue"])
        sessions = GaugeMetricFamily("privascan_sessions", "Sessions holding data")
        held = GaugeMetricFamily("privascan_bytes_held", "Bytes of session data held in memory (Redis: its used_memory)")
        workers = GaugeMetricFamily("privascan_workers", "Inference workers by state", labels=["state"])
        job_seconds = CounterMetricFamily("privascan_job_seconds", "Seconds spent in jobs, by kind", labels=["kind"])
        jobs = CounterMetricFamily("privascan_jobs", "Jobs finished, by kind", labels=["kind"])
        if client is not None:
            from .remote_jobs import QUEUES, _queue_set

            for queue in QUEUES:
                depth.add_metric([queue], int(client.zcard(_queue_set(queue))))
            sessions.add_metric([], len(store))
            held.add_metric([], int(client.info("memory")["used_memory"]))
            beats = app.extensions["privascan_models"].workers()
            workers.add_metric(["busy"], sum(1 for w in beats if w["current"]))
            workers.add_metric(["idle"], sum(1 for w in beats if not w["current"]))
            counts = {k.decode(): int(v) for k, v in client.hgetall(JOB_COUNT).items()}
            for kind, total in client.hgetall(JOB_SUM).items():
                job_seconds.add_metric([kind.decode()], float(total))
            for kind, count in counts.items():
                jobs.add_metric([kind], count)
        else:
            worker = app.extensions["privascan_worker"]
            depth.add_metric(["embedded"], worker.pending())
            sessions.add_metric([], len(store))
            held.add_metric([], store.total_bytes())
            workers.add_metric(["busy" if worker.current else "idle"], 1)
        yield from (depth, sessions, held, workers, job_seconds, jobs)


def init_app(app) -> None:
    registry = CollectorRegistry(auto_describe=False)  # per app: tests build many apps in one process
    registry.register(_Collector(app))
    app.extensions["privascan_metrics"] = registry
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics():
    body = generate_latest(current_app.extensions["privascan_metrics"])
    return Response(body, mimetype=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
