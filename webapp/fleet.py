"""Worker heartbeats in Redis, and the model status a web replica shows from them.

In scale-out mode web replicas load no model; ``privascan worker``
processes do. Each worker writes a small heartbeat every few seconds (its
classifiers' states, its device, what it is running) under a key that
expires soon after, so a worker that died simply disappears. ``FleetStatus``
stands in for the web replica's ``ModelManager``: the same ``status()``
answers, composed from the live heartbeats, so the status line, the Analyze
buttons and the readiness check work unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import redis

from .models import ModelStatus

WORKER_PREFIX = "privascan:worker:"
HEARTBEAT_SECONDS = 3.0
HEARTBEAT_TTL = 15  # three missed beats and the worker counts as gone


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    """A worker's background thread: publish ``snapshot()`` every HEARTBEAT_SECONDS."""

    def __init__(self, client: redis.Redis, models, device: str, queues: list[str]):
        self.client, self.models, self.device, self.queues = client, models, device, queues
        self.id = worker_id()
        self.current = ""  # the kind of job running now ("" when idle)
        self.jobs_done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict:
        statuses = {name: {"state": status.state, "message": status.message, "advice": status.advice,
                           "background": status.background}
                    for name, status in ((n, self.models.status(n)) for n in self.models.registry.classifiers)}
        return {"id": self.id, "device": self.device, "queues": self.queues, "statuses": statuses,
                "current": self.current, "jobs_done": self.jobs_done, "at": time.time()}

    def beat(self) -> None:
        try:
            self.client.set(WORKER_PREFIX + self.id, json.dumps(self.snapshot()), ex=HEARTBEAT_TTL)
        except redis.RedisError:
            pass  # Redis away: the next beat tries again; the web side sees no worker meanwhile

    def start(self) -> None:
        def run():
            while not self._stop.is_set():
                self.beat()
                self._stop.wait(HEARTBEAT_SECONDS)

        self._thread = threading.Thread(target=run, name="privascan-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(WORKER_PREFIX + self.id)
        except redis.RedisError:
            pass


def live_workers(client: redis.Redis) -> list[dict]:
    keys = list(client.scan_iter(WORKER_PREFIX + "*", count=200))
    beats = client.mget(keys) if keys else []
    return [json.loads(beat) for beat in beats if beat]


class FleetStatus:
    """The web replica's model status: what the workers' heartbeats say."""

    def __init__(self, client: redis.Redis, registry):
        self.client = client
        self.registry = registry

    def start(self) -> None:  # the ModelManager interface: nothing to load here
        pass

    def wait(self, timeout: float | None = None) -> None:
        pass

    def workers(self) -> list[dict]:
        try:
            return live_workers(self.client)
        except redis.RedisError:
            return []

    def status(self, classifier_name: str) -> ModelStatus:
        workers = self.workers()
        states = [w["statuses"].get(classifier_name) for w in workers]
        ready = [w for w, s in zip(workers, states) if s and s["state"] == "ready"]
        if ready:
            devices = sorted({w["device"] for w in ready})
            busy = sum(1 for w in ready if w["current"])
            doing = f", {busy} busy" if busy else ", all idle"
            message = f"{len(ready)} worker{'s' if len(ready) != 1 else ''} ready ({', '.join(devices)}{doing})."
            return ModelStatus("ready", message)
        loading = [s for s in states if s and s["state"] in ("waiting", "loading")]
        if loading:
            return ModelStatus("loading", f"{len(loading)} worker{'s' if len(loading) != 1 else ''} loading the model.")
        failed = [s for s in states if s and s["state"] == "unavailable"]
        if failed:
            return ModelStatus("unavailable", failed[0]["message"], failed[0]["advice"])
        return ModelStatus("waiting", "No inference worker is running yet.",
                           "Start one with `privascan worker` (same PRIVASCAN_REDIS_URL and PRIVASCAN_SECRET_KEY).")
