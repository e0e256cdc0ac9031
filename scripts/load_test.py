#!/usr/bin/env python3
"""Load test: many simulated people against the real server on loopback.

    .venv/bin/python scripts/load_test.py                 # 50 people, 2 minutes
    .venv/bin/python scripts/load_test.py --users 10 --seconds 20

Starts ``gunicorn --config webapp/gunicorn_conf.py wsgi:app`` in demo mode (a
tiny random MedSigLIP, so inference is quick but real: localizer, crop,
classifier and Grad-CAM all run) on a free loopback port. Each simulated
person, in a thread with their own connection and cookie, repeats what the
page does: open the page, upload a photo, ask for its analysis (if the queue
is full: read the "busy" answer, wait a few seconds, ask again), poll the card
every second until it is done, view the pictures, think, clear the session.
The run stops by itself after ``--seconds`` (requests in flight finish, each
bounded by a timeout).

It prints the number of requests, the 5xx answers other than the designed
"busy" 503, the queue-full rejections (and whether each had Retry-After and
the "busy" message), p50/p95 latency of non-inference requests (every request
here: uploading and asking for an analysis only queue work; the model runs on
the worker thread), overall and while the queue was full, and the resident
memory of the server's worker process at start, peak and end. Latencies are
measured by the client, which shares the machine's cores with the server, so
they are upper bounds. Nothing is written to disk; nothing here is a test.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from liveserver import (
    CARD_ID,
    POLLING,
    REPO,
    Client,
    OutputTail,
    children,
    encode,
    free_port,
    gunicorn_command,
    lesion_photo,
    prepare_first_run_caches,
    rss_mb,
    server_environment,
    wait_until_ready,
)

BUSY_WINDOW = 1.0  # a request counts as "while the queue was full" within this many seconds of a rejection
# gunicorn's access log, to stdout (a pipe read into memory), for the server's own time per request:
# %(M)s is milliseconds from the request being read to the response being sent.
ACCESS_FORMAT = "ACCESS %(M)s %(m)s %(U)s %(s)s"
ACCESS_LINE = re.compile(r"^ACCESS (\d+) (\w+) (\S+) (\d{3})$")


def kind_of(method: str, path: str) -> str:
    if path == "/":
        return "page"
    if path == "/photos":
        return "upload"
    if path.endswith("/analyze"):
        return "analyze"
    if path.endswith("/card"):
        return "poll"
    if path.endswith((".jpg", ".png")):
        return "picture"
    if path == "/session/clear":
        return "clear"
    return "other"


@dataclass
class Sample:
    kind: str
    started: float
    seconds: float
    status: int


class Recorder:
    def __init__(self):
        self.samples: list[Sample] = []
        self.rejections: list[float] = []
        self.rejections_well_formed = 0
        self.errors: list[str] = []
        self.analyses_done = 0
        self.server_ms: dict[str, list[int]] = defaultdict(list)  # the server's own time, from its access log
        self._lock = threading.Lock()

    def add(self, kind: str, reply, started: float) -> None:
        with self._lock:
            self.samples.append(Sample(kind, started, reply.seconds, reply.status))

    def rejected(self, at: float, well_formed: bool) -> None:
        with self._lock:
            self.rejections.append(at)
            self.rejections_well_formed += well_formed

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def done(self) -> None:
        with self._lock:
            self.analyses_done += 1


def person(index: int, port: int, photos: list[bytes], deadline: float, record: Recorder, stop: threading.Event) -> None:
    rng = random.Random(index)
    time.sleep(rng.uniform(0, 3))  # people do not all arrive in the same millisecond

    def timed(kind: str, call, *args):
        started = time.monotonic()
        reply = call(*args)
        record.add(kind, reply, started)
        return reply

    while time.monotonic() < deadline and not stop.is_set():
        client = Client(port, timeout=30)
        try:
            timed("page", client.open_page)
            photo = photos[rng.randrange(len(photos))]
            upload = timed("upload", client.upload, (photo, f"person-{index}.jpg"))
            ids = CARD_ID.findall(upload.text)
            if upload.status != 200 or not ids:
                record.error(f"upload: HTTP {upload.status}")
                continue
            photo_id = ids[0]
            while time.monotonic() < deadline:
                asked = timed("analyze", client.post, f"/photos/{photo_id}/analyze")
                if asked.status != 503:
                    break
                record.rejected(time.monotonic(), "retry-after" in asked.headers and "busy" in asked.text)
                time.sleep(rng.uniform(3, 6))  # an impatient person presses Analyze again soon
            finished = False
            while time.monotonic() < deadline:
                time.sleep(1.0)  # the card polls itself every second
                card = timed("poll", client.get, f"/photos/{photo_id}/card")
                if card.status == 200 and POLLING not in card.text:
                    finished = "Analysed" in card.text
                    break
            if finished:
                record.done()
                for picture in ("thumbnail.jpg", "photo.jpg", "crop.jpg", "heatmap.png", "located.jpg"):
                    timed("picture", client.get, f"/photos/{photo_id}/{picture}", False)
            time.sleep(rng.uniform(1, 3))  # reading the result
            timed("clear", client.post, "/session/clear")
        except Exception as exc:  # noqa: BLE001 - counted and reported, the person carries on
            record.error(f"{type(exc).__name__}: {exc}")
            time.sleep(1)
        finally:
            client.close()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="simulated people at once (default 50)")
    parser.add_argument("--seconds", type=float, default=120, help="length of the run (default 120)")
    parser.add_argument("--photo-size", default="1600x1200", help="photo width x height (default 1600x1200)")
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.photo_size.lower().split("x"))

    # Every simulated person comes from 127.0.0.1: the per-client rate limit would treat them as one.
    env = server_environment(PRIVASCAN_RATE_LIMIT_ENABLED="0")
    prepare_first_run_caches(env)
    photos = [encode(lesion_photo(seed, width, height), "JPEG", quality=90) for seed in range(8)]
    port = free_port()
    server = subprocess.Popen(
        gunicorn_command(port, "--access-logfile", "-", "--access-logformat", ACCESS_FORMAT),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    record = Recorder()
    measuring = threading.Event()

    def server_time(line: str) -> bool:
        found = ACCESS_LINE.match(line)
        if found and measuring.is_set():
            record.server_ms[kind_of(found.group(2), found.group(3))].append(int(found.group(1)))
        return bool(found)

    output = OutputTail(server.stdout, divert=server_time)
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        wait_until_ready(port, 300, alive=lambda: server.poll() is None)
        workers = children(server.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {workers}")
        worker = workers[0]
        rss_start = rss_mb(worker)
        started = time.monotonic()
        deadline = started + args.seconds
        measuring.set()

        def sample_memory() -> None:
            while not stop.wait(1.0):
                try:
                    rss.append((time.monotonic() - started, rss_mb(worker)))
                except OSError:
                    return

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        people = [threading.Thread(target=person, args=(i, port, photos, deadline, record, stop), daemon=True)
                  for i in range(args.users)]
        for thread in people:
            thread.start()
        for thread in people:
            thread.join(timeout=max(1.0, deadline - time.monotonic()) + 60)
        stop.set()
        elapsed = time.monotonic() - started
        rss_end = rss_mb(worker)
    finally:
        stop.set()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    report(args, width, height, photos, record, elapsed, rss_start, rss_end, rss, output)
    return 0


def report(args, width, height, photos, record: Recorder, elapsed, rss_start, rss_end, rss, output) -> None:
    samples = record.samples
    rejections = sorted(record.rejections)
    server_errors = [s for s in samples if s.status >= 500 and not (s.kind == "analyze" and s.status == 503)]
    busy = [s for s in samples if s.kind == "analyze" and s.status == 503]

    def while_full(sample: Sample) -> bool:
        # any rejection within BUSY_WINDOW of this request's start
        import bisect

        at = bisect.bisect_left(rejections, sample.started - BUSY_WINDOW)
        return at < len(rejections) and rejections[at] <= sample.started + sample.seconds + BUSY_WINDOW

    full = [s for s in samples if while_full(s)]
    print(f"Load test: {args.users} simulated people for {elapsed:.0f} s against gunicorn on loopback (demo model)")
    print(f"  photo: {width}x{height} JPEG, about {statistics.mean(map(len, photos)) / 1024:.0f} KB")
    print(f"requests: {len(samples)} ({len(samples) / elapsed:.1f}/s); analyses completed: {record.analyses_done}")
    print(f"5xx answers (other than the designed 503 busy): {len(server_errors)}")
    print(f"client-side errors (timeouts, resets): {len(record.errors)}"
          + (f" e.g. {record.errors[0]}" if record.errors else ""))
    print(f"queue-full rejections (503): {len(busy)}; with Retry-After and the 'busy' message: "
          f"{record.rejections_well_formed}/{len(record.rejections)}")
    print(f"time with the queue full (a rejection within {BUSY_WINDOW:.0f} s): "
          f"{len(full)}/{len(samples)} requests")
    print()
    print("| requests | count | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")

    def row(label: str, chosen: list[Sample]) -> None:
        times = [s.seconds * 1000 for s in chosen]
        if times:
            print(f"| {label} | {len(times)} | {percentile(times, 0.5):.0f} | {percentile(times, 0.95):.0f} | {max(times):.0f} |")

    row("all (none runs the model)", samples)
    row("all, while the queue was full", full)
    by_kind = defaultdict(list)
    for sample in samples:
        by_kind[sample.kind].append(sample)
    for kind in ("page", "upload", "analyze", "poll", "picture", "clear"):
        row(kind, by_kind.get(kind, []))
        row(f"{kind}, while the queue was full", [s for s in by_kind.get(kind, []) if while_full(s)])
    print()
    print("The server's own time (gunicorn access log: request read to response sent), ms:")
    print()
    print("| requests | count | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    every = [ms for values in record.server_ms.values() for ms in values]
    for label, values in [("all", every)] + [(k, record.server_ms.get(k, [])) for k in
                                             ("page", "upload", "analyze", "poll", "picture", "clear")]:
        if values:
            print(f"| {label} | {len(values)} | {percentile(values, 0.5):.0f} | {percentile(values, 0.95):.0f} | {max(values)} |")
    print()
    peak = max((value for _, value in rss), default=rss_end)
    settled = [value for at, value in rss if at >= min(30.0, elapsed / 4)]
    after_warmup = settled[0] if settled else rss_start
    print(f"worker RSS MB: start {rss_start:.0f}, after warm-up {after_warmup:.0f}, peak {peak:.0f}, end {rss_end:.0f}")
    p95_full = percentile([s.seconds * 1000 for s in full], 0.95)
    print()
    print("targets:")
    print(f"  0 5xx (other than 503 busy): {'met' if not server_errors else 'MISSED'} ({len(server_errors)})")
    print(f"  p95 of non-inference requests while the queue is full <= 100 ms: "
          f"{'met' if full and p95_full <= 100 else ('not exercised' if not full else 'MISSED')} ({p95_full:.0f} ms)")
    print(f"  busy answers carry Retry-After and 'busy': "
          f"{'met' if record.rejections_well_formed == len(record.rejections) else 'MISSED'}")
    stable = rss_end <= after_warmup * 1.10 + 20
    print(f"  RSS stable (end within 10 % + 20 MB of after warm-up): {'met' if stable else 'MISSED'}")
    if server_errors:
        print("server output (last lines):")
        print(output.text()[-3000:])


if __name__ == "__main__":
    sys.exit(main())
