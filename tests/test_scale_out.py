"""Scale-out mode end to end: two gunicorn web replicas, one Celery worker, one real redis-server.

A person's requests alternate between the two replicas (a load balancer
without sticky sessions): add a photo, analyse it, see the result and its
heatmap, run a live frame, clear. Afterwards Redis holds none of the
session's keys. The processes are the production ones (``gunicorn --config
webapp/gunicorn_conf.py`` and ``privascan worker``) with the tiny model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.fleet import (
    CARD, REPO, AlternatingBrowser, environment, fleet, frame_fields, start_worker, upload_fields, wait_for_card,
)
from tests.helpers import photo_bytes
from tests.redis_server import redis_server


def test_two_replicas_and_a_worker_serve_one_person_without_sticky_sessions(tiny_model_dir, redis_url):
    client = redis.Redis.from_url(redis_url)
    with fleet(redis_url, tiny_model_dir) as (ports, _, _):
        person_visits_and_clears(client, ports)


def person_visits_and_clears(client: redis.Redis, ports: list[int]) -> None:
    """Add a photo, analyse it, its heatmap, a live frame, clear: each request to the next replica."""
    browser = AlternatingBrowser(ports)
    page = browser.open_page()
    assert "1 worker ready" in page
    status, _, _ = browser.request("POST", "/photos", **upload_fields(photo_bytes(7), "Ms Brown arm.jpg"))
    assert status == 200
    status, body, _ = browser.request("GET", "/", htmx=False)
    (photo_id,) = CARD.findall(body.decode())
    assert "Ms Brown arm.jpg" in body.decode()

    status, _, _ = browser.request("POST", f"/photos/{photo_id}/analyze")
    assert status == 200
    card = wait_for_card(browser, photo_id)
    assert 'data-state="done"' in card, card
    status, png, headers = browser.request("GET", f"/photos/{photo_id}/heatmap.png")
    assert status == 200 and png.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"

    assert browser.request("POST", "/live/start")[0] == 200
    status, body, _ = browser.request("POST", "/live/frame", **frame_fields(photo_bytes(8)))
    assert status == 200, body.decode()[:2000]
    assert "frame" in body.decode().lower()

    store_keys = list(client.scan_iter("privascan:s:*"))
    session_keys = set(client.scan_iter("privascan:session:*"))
    assert len(store_keys) == 1 and session_keys
    assert browser.request("POST", "/session/clear")[0] == 200
    assert browser.replicas_used == set(ports)
    assert list(client.scan_iter("privascan:s:*")) == []
    assert not session_keys & set(client.scan_iter("privascan:session:*"))
    assert list(client.scan_iter("privascan:job:*")) == []  # no job data left behind
    status, metrics, _ = browser.request("GET", "/metrics")
    assert status == 200 and b"privascan_workers" in metrics and b'privascan_jobs_total{kind="_analyse_stored_photo"} 1.0' in metrics


def test_a_worker_killed_mid_job_leaves_the_job_to_another_worker(tiny_model_dir, redis_url):
    """SIGKILL while a photo is being analysed: acks_late puts it back, a second worker finishes it."""
    client = redis.Redis.from_url(redis_url)
    with fleet(redis_url, tiny_model_dir, replicas=1, PRIVASCAN_JOB_VISIBILITY_SECONDS="5",
               PRIVASCAN_JOB_DEADLINE_SECONDS="600") as (ports, processes, env):
        browser = AlternatingBrowser(ports)
        browser.open_page()
        for seed in range(20, 24):  # the tiny model is quick: try until the kill lands mid-job
            browser.request("POST", "/photos", **upload_fields(photo_bytes(seed), f"p{seed}.jpg"))
        photo_ids = CARD.findall(browser.request("GET", "/", htmx=False)[1].decode())
        worker = processes[0]
        killed_on = None
        for photo_id in photo_ids:
            assert browser.request("POST", f"/photos/{photo_id}/analyze")[0] == 200
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                html = browser.request("GET", f"/photos/{photo_id}/card")[1].decode()
                if 'data-state="running"' in html:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait()
                    killed_on = photo_id
                    break
                if 'data-state="done"' in html:
                    break
                time.sleep(0.02)
            if killed_on:
                break
        assert killed_on, "the kill never landed while a job was running"
        assert 'data-state="running"' in browser.request("GET", f"/photos/{killed_on}/card")[1].decode()
        second = start_worker(env)
        processes.append(second)
        card = wait_for_card(browser, killed_on, timeout=240)
        assert 'data-state="done"' in card
        assert list(client.scan_iter("privascan:job:*")) == []


@pytest.mark.timeout(600)
def test_the_fleet_under_strace_writes_nothing_to_disk(tiny_model_dir, tmp_path_factory):
    """Rule 1 across machines' worth of processes: redis-server, both replicas and the worker, traced from their first call."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import strace_disk_writes as proof
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from tests.test_strace_disk_writes import strace_problem

    problem = strace_problem()
    if problem:
        pytest.skip(problem)
    # matplotlib writes its font list on its very first import ever (a cache of fonts, no user data).
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True, env=environment("", tiny_model_dir))
    logs = [f"/dev/shm/privascan-fleet-strace-{os.getpid()}-{name}.log" for name in ("redis", "web-and-worker")]
    base = ["strace", "-f", "-qq", "-y", "-e", "trace=" + ",".join(proof.SYSCALLS)]
    if proof.strace_supports_seccomp("strace"):
        base.insert(1, "--seccomp-bpf")
    try:
        with redis_server(wrap=(*base, "-o", logs[0], "--")) as url:
            client = redis.Redis.from_url(url)
            # -ff: one log per process (web replicas and worker share the prefix).
            with fleet(url, tiny_model_dir, wrap=(*base, "-ff", "-o", logs[1], "--")) as (ports, _, _):
                person_visits_and_clears(client, ports)
            client.close()
        lines = []
        per_process = [str(p) for p in Path("/dev/shm").glob(Path(logs[1]).name + ".*")]
        assert len(per_process) >= 5  # two gunicorn masters and their workers, the worker and its children
        assert os.path.getsize(logs[0]) > 0  # redis-server's own trace
        for path in [logs[0], *per_process]:
            pid = path.rsplit(".", 1)[-1] if path != logs[0] else "redis"
            with open(path, errors="replace") as handle:
                lines += [line if line[:1].isdigit() else f"{pid if pid.isdigit() else 1} {line}" for line in handle]
        written = [call for call in proof.parse_trace(lines) if call.succeeded and not all(map(proof.in_memory, call.paths))]
        assert len(lines) > 100  # the traces are real: imports alone open hundreds of files
        print(f"disk_writes={len(written)}")
        assert written == [], "\n".join(map(str, written[:20]))
    finally:
        for path in [logs[0], *Path("/dev/shm").glob(Path(logs[1]).name + "*")]:
            Path(path).unlink(missing_ok=True)
