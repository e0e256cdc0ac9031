#!/usr/bin/env python3
"""Peak memory of the real server while it decodes huge photos, and what it refuses.

    .venv/bin/python scripts/decode_memory.py               # 8 concurrent uploads per case
    .venv/bin/python scripts/decode_memory.py --uploads 4

Starts the production server (``gunicorn --config webapp/gunicorn_conf.py
wsgi:app``, demo model) on a free loopback port and, case by case, sends
``--uploads`` concurrent uploads, each from its own new session:

- ``png-grey``: the attack's 46 KB PNG declaring 8000x6000 grey pixels
  (48 MP, under the 50 MP limit): decoded, shrunk to 3072 px, accepted;
- ``png-colour``: the same size in colour (150 KB): its decode would need
  about 280 MB, more than a session's 200 MB cap, so it is refused (413)
  before a pixel is decoded;
- ``jpeg-same-x3``: one 7000x7000 JPEG sent three times in one upload (the
  attack): decoded once at 1/2 scale (draft mode), the two copies skipped as
  duplicates by the hash of their bytes, before any decoding;
- ``jpeg-distinct-x3``: three different 7000x7000 JPEGs per upload.

The worker process's resident memory is sampled every 10 ms, and its
high-water mark (VmHWM, reset before each case through
``/proc/PID/clear_refs``) read after each case; the peak is the larger of the
two. Each case prints its answers and ``idle_mb``, ``peak_mb`` and
``over_idle_mb``; the last line is ``max_over_idle_mb=N`` (the target is
under 1536). ``keepalive_after_refusal=ok`` says that after a 403 that left
an 830 KB body unread, the next request on the same keep-alive connection was
answered. Photos are made in memory; nothing here writes a file.
"""

from __future__ import annotations

import argparse
import http.client
import io
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from liveserver import (
    REPO,
    Client,
    OutputTail,
    children,
    free_port,
    gunicorn_command,
    multipart,
    prepare_first_run_caches,
    rss_mb,
    server_environment,
    wait_until_ready,
)

MESSAGE = re.compile(r'<span class="message-text">(.*?)</span>', re.S)


def grey_png_48mp() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def colour_png_48mp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000), (200, 150, 120)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def jpeg_7000(seed: int) -> bytes:
    """A photo-like 7000x7000 JPEG (upscaled noise: about 10 MB, so it is not trivially compressible)."""
    small = np.random.default_rng(seed).integers(0, 256, size=(700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((7000, 7000), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def high_water_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_high_water(pid: int) -> bool:
    """Reset the process's peak resident size (procfs, in memory); False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class Outcome:
    status: int
    added: int
    skipped: int
    messages: list[str] = field(default_factory=list)


def plain(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def upload(port: int, files: list[tuple[bytes, str]]) -> Outcome:
    client = Client(port, timeout=300)
    try:
        client.open_page()
        reply = client.upload(*files)
    finally:
        client.close()
    text = plain(reply.text)
    added = re.search(r"Added (\d+) photo", text)
    return Outcome(reply.status, int(added.group(1)) if added else 0, text.count("already in this session"),
                   [plain(m) for m in MESSAGE.findall(reply.text)])


def run_case(port: int, worker: int, name: str, files: list[tuple[bytes, str]], uploads: int, say) -> dict:
    time.sleep(1.0)  # let the previous case's freed memory settle
    idle = rss_mb(worker)
    hwm_reset = reset_high_water(worker)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            try:
                samples.append(rss_mb(worker))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcomes: list[Outcome | Exception] = [None] * uploads  # type: ignore[list-item]

    def one(index: int) -> None:
        try:
            outcomes[index] = upload(port, files)
        except Exception as exc:  # noqa: BLE001 - reported as a failure
            outcomes[index] = exc

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    seconds = time.monotonic() - started
    stop.set()
    sampler.join(5)
    peak = max(samples + [rss_mb(worker)])
    if hwm_reset:
        peak = max(peak, high_water_mb(worker))
    failures = [repr(o) for o in outcomes if not isinstance(o, Outcome)]
    done = [o for o in outcomes if isinstance(o, Outcome)]
    statuses = sorted({o.status for o in done})
    summary = {
        "case": name,
        "statuses": [o.status for o in done],
        "added": sum(o.added for o in done),
        "skipped": sum(o.skipped for o in done),
        "failures": failures,
        "idle_mb": round(idle),
        "peak_mb": round(peak),
        "over_idle_mb": round(peak - idle),
        "seconds": round(seconds, 1),
        "messages": sorted({m for o in done for m in o.messages}),
    }
    say(f"case={name} uploads={uploads} files_per_upload={len(files)} "
        f"file_kb={','.join(str(len(d) // 1024) for d, _ in files)} statuses={'/'.join(map(str, statuses))} "
        f"added={summary['added']} skipped_duplicates={summary['skipped']} failures={len(failures)} "
        f"idle_mb={summary['idle_mb']} peak_mb={summary['peak_mb']} over_idle_mb={summary['over_idle_mb']} "
        f"seconds={summary['seconds']} peak_from={'VmHWM+samples' if hwm_reset else 'samples'}")
    for message in summary["messages"]:
        say(f"  message: {message}")
    for failure in failures:
        say(f"  failure: {failure}")
    return summary


def keepalive_after_refusal(port: int) -> str:
    """A 403 before an 830 KB body is read, then a GET on the same connection: answered?"""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body, content_type = multipart([("photos", (b"x" * 830_000, "big.jpg"))])
        connection.request("POST", "/photos", body=body,
                           headers={"Content-Type": content_type, "X-CSRF-Token": "forged"})
        refused = connection.getresponse()
        refused.read()
        try:
            connection.request("GET", "/status")
            after = connection.getresponse()
            after.read()
            return f"ok (refusal {refused.status}, Connection: {refused.getheader('Connection')}; next request {after.status})"
        except (ConnectionError, http.client.HTTPException) as exc:
            return f"dropped (refusal {refused.status}, Connection: {refused.getheader('Connection')}; next request: {type(exc).__name__})"
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=8, help="concurrent uploads per case (default 8)")
    parser.add_argument("--cases", default="png-grey,png-colour,jpeg-same-x3,jpeg-distinct-x3",
                        help="comma-separated cases to run (default: all four)")
    args = parser.parse_args(argv)

    def say(text: str = "") -> None:
        print(text, flush=True)

    grey, colour = grey_png_48mp(), colour_png_48mp()
    jpegs = [jpeg_7000(seed) for seed in range(3)]
    cases = {
        "png-grey": [(grey, "grey-8000x6000.png")],
        "png-colour": [(colour, "colour-8000x6000.png")],
        "jpeg-same-x3": [(jpegs[0], "a.jpg"), (jpegs[0], "a-again.jpg"), (jpegs[0], "a-third.jpg")],
        "jpeg-distinct-x3": [(jpegs[0], "a.jpg"), (jpegs[1], "b.jpg"), (jpegs[2], "c.jpg")],
    }
    chosen = [name.strip() for name in args.cases.split(",") if name.strip()]
    env = server_environment()
    prepare_first_run_caches(env)
    port = free_port()
    server = subprocess.Popen(gunicorn_command(port), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputTail(server.stdout)
    results = []
    try:
        wait_until_ready(port, 300, alive=lambda: server.poll() is None)
        workers = children(server.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {workers}")
        worker = workers[0]
        say(f"Server: {' '.join(gunicorn_command(port)[1:])} (demo model), worker pid {worker}")
        for name in chosen:
            results.append(run_case(port, worker, name, cases[name], args.uploads, say))
        say(f"keepalive_after_refusal={keepalive_after_refusal(port)}")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    errors = [line for line in output.text().splitlines() if "Traceback" in line or "incident" in line]
    say(f"server_errors_logged={len(errors)}")
    for line in errors[:10]:
        say(f"  {line}")
    say(f"max_over_idle_mb={max(r['over_idle_mb'] for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
