"""privascan worker: run the model for a scale-out deployment, as a Celery worker.

Reads the same environment as the web replicas (PRIVASCAN_REDIS_URL,
PRIVASCAN_SECRET_KEY, PRIVASCAN_MODEL...), loads one model copy in this
process (on CUDA when a GPU is present), publishes heartbeats, and consumes
photo analyses, heatmaps and live frames from Redis. Live frames are read
first; ``--queues live`` makes a worker that serves only live scans.
"""

from __future__ import annotations

import logging
import os

from .. import remote_jobs

QUEUE_NAMES = {"live": remote_jobs.LIVE_QUEUE, "photos": remote_jobs.PHOTO_QUEUE}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("worker", help="run inference for web replicas (scale-out mode, Celery)",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("--queues", default="live,photos",
                        help="comma-separated: live, photos (default both; live frames first)")
    parser.add_argument("--pool", choices=("solo", "threads"), default="solo",
                        help="solo: one job at a time (default); threads: --concurrency jobs share one model copy")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once with --pool threads (default 1)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from .. import create_app
    from ..config import config_from_environment
    from ..fleet import Heartbeat

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config_from_environment()["REDIS_URL"]:
        print("privascan worker needs PRIVASCAN_REDIS_URL (the Redis the web replicas use). See docs/scaling.md.")
        return 2
    try:
        queues = [QUEUE_NAMES[name.strip()] for name in args.queues.split(",") if name.strip()]
    except KeyError as exc:
        print(f"Unknown queue {exc.args[0]!r}: use live, photos or both.")
        return 2
    # Before torch is imported: its OpenMP threads otherwise busy-wait between
    # operations, taking the cores that web replicas or other workers on the
    # same machine need (the same setting as webapp/gunicorn_conf.py's).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app = create_app({"ROLE": "worker"})  # exits with a message if Redis is unsafe or unreachable
    models = app.extensions["privascan_models"]
    device = _device()
    heartbeat = Heartbeat(app.extensions["privascan_redis"], models, device, queues)
    app.extensions["privascan_heartbeat"] = heartbeat
    heartbeat.start()  # "loading" while the model loads, then "ready": web replicas show both
    models.wait()
    celery = app.extensions["privascan_celery"]
    worker = celery.Worker(
        pool_cls=args.pool, concurrency=args.concurrency if args.pool == "threads" else 1, queues=queues,
        hostname=f"privascan@{heartbeat.id}", without_gossip=True, without_mingle=True, without_heartbeat=True,
        loglevel="WARNING", optimization="fair",
    )
    try:
        worker.start()
    finally:
        heartbeat.stop()
    return worker.exitcode or 0


def _device() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
