"""Scale-out mode's jobs with a real ``privascan worker``: a worker that never returns, sessions gone meanwhile, lesions.

The web side is the real app with ``REDIS_URL`` set, driven through Flask's
test client; the worker is the production ``privascan worker`` process (a
Celery worker on the tiny model), and Redis a real redis-server of this
module's own (other modules flush theirs, which would also drop Celery's
queue bindings under a running worker). The worker is stopped with SIGSTOP
to play one that hangs or sits behind a broken network link: it neither
finishes nor acknowledges, and its heartbeat stops.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest
import redis

from tests.fleet import environment, start_worker, stop, wait_for_worker
from tests.helpers import Browser, make_app, photo_bytes
from tests.redis_server import redis_server
from webapp.jobs import OVERDUE
from webapp.remote_jobs import RUNNING_KEY

SECRET = "k" * 64  # tests/fleet.py gives the worker the same PRIVASCAN_SECRET_KEY
DEADLINE = 10  # seconds a photo job may run before its card says it failed (far above the tiny model's time)
LESION_LINK = re.compile(r'href="/lesions/([^"?/]+)"')


@pytest.fixture(scope="module")
def fleet_redis():
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def worker(fleet_redis, tiny_model_dir):
    """One ``privascan worker``; its stderr is read into memory (to show it never logged a traceback)."""
    env = environment(fleet_redis, tiny_model_dir, PRIVASCAN_JOB_VISIBILITY_SECONDS="4",
                      PRIVASCAN_JOB_DEADLINE_SECONDS=str(DEADLINE))
    process = start_worker(env)
    process.log = []
    reader = threading.Thread(target=lambda: process.log.extend(process.stderr), daemon=True)
    reader.start()
    client = redis.Redis.from_url(fleet_redis)
    try:
        wait_for_worker(client, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
        stop(process)
        client.close()


def web_app(tiny_model_dir, url, **overrides):
    return make_app(tiny_model_dir, REDIS_URL=url, SECRET_KEY=SECRET, **overrides)


def running(client: redis.Redis, photo_id: str) -> bool:
    """Whether a worker has started this photo's job and not finished it (its deadline is noted)."""
    return any(f"'{photo_id}'" in member.decode() for member in client.zrange(RUNNING_KEY, 0, -1))


def card_of(browser: Browser, photo_id: str) -> str:
    response = browser.get(f"/photos/{photo_id}/card")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def explain_card(browser: Browser, photo_id: str, condition: str) -> str:
    """The card as it polls while an extra heatmap is computed."""
    response = browser.get(f"/photos/{photo_id}/card?explaining={condition}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def wait_for(browser: Browser, photo_id: str, states=("done", "error"), timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        html = card_of(browser, photo_id)
        if any(f'data-state="{state}"' in html for state in states):
            return html
        time.sleep(0.2)
    raise AssertionError(f"photo {photo_id} never reached {states}")


def analysed(browser: Browser, seed: int, name: str) -> str:
    assert browser.upload((photo_bytes(seed), name)).status_code == 200
    photo_id = next(pid for pid in browser.photo_ids() if name in card_of(browser, pid))
    asked = browser.post(f"/photos/{photo_id}/analyze")
    assert asked.status_code == 200
    assert 'data-state="queued"' in asked.get_data(as_text=True)  # the card answered now polls (it did not, once)
    assert 'data-state="done"' in wait_for(browser, photo_id)
    return photo_id


def test_a_worker_that_never_returns_leaves_a_failed_card_not_running_forever(worker, fleet_redis, tiny_model_dir):
    app = web_app(tiny_model_dir, fleet_redis)
    client = redis.Redis.from_url(fleet_redis)
    browser = Browser(app.test_client())
    browser.upload(*[(photo_bytes(seed), f"p{seed}.jpg") for seed in range(30, 36)])
    stopped_on = None
    for photo_id in browser.photo_ids():  # the tiny model is quick: try until the stop lands mid-job
        assert browser.post(f"/photos/{photo_id}/analyze").status_code == 200
        until = time.monotonic() + 120
        while time.monotonic() < until and not running(client, photo_id):
            time.sleep(0.002)
        worker.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # the signal has landed
        if running(client, photo_id):  # still running when it stopped
            stopped_on = photo_id
            break
        worker.send_signal(signal.SIGCONT)
        wait_for(browser, photo_id)
    assert stopped_on, "the stop never landed while a job was running"
    try:
        started = time.monotonic()
        assert "hx-trigger" in card_of(browser, stopped_on)  # "queued" or "running" (the stop may land in between)
        card = wait_for(browser, stopped_on, states=("error",), timeout=DEADLINE + 60)
        assert time.monotonic() - started >= DEADLINE - 5  # failed by the deadline, not before
        assert OVERDUE.split(":")[0] in card and "Please try again" in card
        assert "hx-trigger" not in card  # the card stopped polling
        assert 'data-state="error"' in browser.get("/", htmx=False).get_data(as_text=True)
    finally:
        worker.send_signal(signal.SIGCONT)
    wait_for_worker(client, worker)  # its heartbeat had expired: back once it beats again
    # The worker is back: "try again" works (or the first run, resumed, finishes first; both are real results).
    assert browser.post(f"/photos/{stopped_on}/analyze").status_code == 200
    assert 'data-state="done"' in wait_for(browser, stopped_on)


def test_a_job_whose_session_ended_meanwhile_is_dropped_without_error(worker, fleet_redis, tiny_model_dir):
    """Queued, then the session is cleared (one person) or idles out (another): the worker finds nothing and carries on."""
    app = web_app(tiny_model_dir, fleet_redis, SESSION_IDLE_MINUTES=10 / 60)
    client = redis.Redis.from_url(fleet_redis)
    log_from = len(worker.log)
    jobs_before = set(client.scan_iter("privascan:job:*"))
    sessions_before = set(client.scan_iter("privascan:s:*"))  # the other tests' people, still here
    cleared, idle = Browser(app.test_client()), Browser(app.test_client())
    worker.send_signal(signal.SIGSTOP)
    try:
        for browser, seed in ((cleared, 40), (idle, 41)):
            browser.upload((photo_bytes(seed), f"p{seed}.jpg"))
            (photo_id,) = browser.photo_ids()
            assert browser.post(f"/photos/{photo_id}/analyze").status_code == 200
        assert len(set(client.scan_iter("privascan:job:*")) - jobs_before) == 2
        assert cleared.post("/session/clear").status_code == 200
        until = time.monotonic() + 60
        while time.monotonic() < until and set(client.scan_iter("privascan:s:*")) - sessions_before:
            time.sleep(0.5)  # the idle timeout (10 s): Redis deletes the other session's hash itself
        assert set(client.scan_iter("privascan:s:*")) == sessions_before
    finally:
        worker.send_signal(signal.SIGCONT)
    until = time.monotonic() + 120
    while time.monotonic() < until and list(client.scan_iter("privascan:job:*")):
        time.sleep(0.2)
    assert list(client.scan_iter("privascan:job:*")) == []  # both ran, found no session, and were done with
    assert set(client.scan_iter("privascan:s:*")) == sessions_before  # neither brought its session back
    assert worker.poll() is None
    logged = worker.log[log_from:]
    assert not any(b"Traceback" in line or b"ERROR" in line for line in logged), b"".join(logged)[-3000:]
    fresh = Browser(app.test_client())
    analysed(fresh, 42, "after.jpg")  # and the worker still serves the next person


def test_lesion_follow_up_in_redis_mode(worker, fleet_redis, tiny_model_dir):
    """Group a photo as a lesion, add a follow-up photo, compare, rename, decline a suggestion, delete: all in Redis."""
    app = web_app(tiny_model_dir, fleet_redis, SAME_LESION_SIMILARITY=-1.0)  # every analysed pair is "alike"
    client = redis.Redis.from_url(fleet_redis)
    sessions_before = set(client.scan_iter("privascan:s:*"))
    browser = Browser(app.test_client())
    first = analysed(browser, 50, "shoulder-2023.jpg")
    assert browser.post(f"/photos/{first}/date", data={"taken_on": "2023-03-01"}).status_code == 200
    made = browser.post(f"/photos/{first}/lesion", data={"lesion": "new", "name": "Left shoulder mole", "site": "shoulder"})
    assert made.status_code == 200 and "Started the lesion" in made.get_data(as_text=True)
    (lesion_id,) = set(LESION_LINK.findall(browser.get("/", htmx=False).get_data(as_text=True)))

    second = analysed(browser, 51, "shoulder-2024.jpg")  # the follow-up visit
    card = card_of(browser, second)
    assert "Same lesion as" in card and "Left shoulder mole" in card
    key = re.search(r'name="key" value="([^"]+)"', card).group(1)
    no = browser.post(f"/photos/{second}/lesion/suggestion", data={"key": key, "answer": "no"})
    assert no.status_code == 200 and "will not suggest it again" in no.get_data(as_text=True)
    assert "Same lesion as" not in card_of(browser, second)  # the "no" is kept in Redis

    third = analysed(browser, 52, "shoulder-2025.jpg")
    key = re.search(r'name="key" value="([^"]+)"', card_of(browser, third)).group(1)
    assert key == f"lesion:{lesion_id}"
    assert browser.post(f"/photos/{third}/lesion/suggestion", data={"key": key, "answer": "yes"}).status_code == 200
    assert browser.post(f"/photos/{second}/lesion", data={"lesion": lesion_id}).status_code == 200

    page = browser.get(f"/lesions/{lesion_id}", htmx=False)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Change since the previous photo" in text
    assert all(name in text for name in ("shoulder-2023.jpg", "shoulder-2024.jpg", "shoulder-2025.jpg"))
    renamed = browser.post(f"/lesions/{lesion_id}", data={"name": "Shoulder mole (left)", "site": "shoulder"})
    assert renamed.status_code == 200
    report = browser.get(f"/report/lesions/{lesion_id}", htmx=False).get_data(as_text=True)
    assert "Shoulder mole (left)" in report
    fhir = browser.get(f"/export/lesions/{lesion_id}.fhir.json", htmx=False)
    assert fhir.status_code == 200 and fhir.mimetype == "application/fhir+json"

    dump = b"".join(value for key in client.scan_iter("privascan:s:*") for value in client.hgetall(key).values())
    assert b"Shoulder mole" not in dump and b"shoulder-2023" not in dump  # sealed, like the photos

    assert browser.post(f"/photos/{first}/delete").status_code == 200  # leaves the lesion, which keeps the other two
    text = browser.get(f"/lesions/{lesion_id}", htmx=False).get_data(as_text=True)
    assert "shoulder-2023.jpg" not in text and "shoulder-2024.jpg" in text and "shoulder-2025.jpg" in text
    for photo_id in (second, third):
        assert browser.post(f"/photos/{photo_id}/ungroup").status_code == 200
    assert browser.get(f"/lesions/{lesion_id}", htmx=False).status_code == 404  # its last photo left: gone
    assert len(set(client.scan_iter("privascan:s:*")) - sessions_before) == 1
    assert browser.post("/session/clear").status_code == 200
    assert set(client.scan_iter("privascan:s:*")) == sessions_before


def test_an_extra_heatmap_whose_worker_never_returns_stops_polling(worker, fleet_redis, tiny_model_dir):
    app = web_app(tiny_model_dir, fleet_redis)
    client = redis.Redis.from_url(fleet_redis)
    browser = Browser(app.test_client())
    photo_id = analysed(browser, 60, "spot.jpg")
    conditions = re.findall(rf'/photos/{photo_id}/explain/([^"?/]+)"', card_of(browser, photo_id))
    assert conditions
    stopped_for = None
    for condition in conditions:  # the tiny model is quick: try until the stop lands mid-job
        asked = browser.post(f"/photos/{photo_id}/explain/{condition}")
        assert asked.status_code == 200 and "hx-trigger" in asked.get_data(as_text=True)
        until = time.monotonic() + 120
        while time.monotonic() < until and not running(client, photo_id) and \
                "hx-trigger" in explain_card(browser, photo_id, condition):
            time.sleep(0.002)
        worker.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        if running(client, photo_id):
            stopped_for = condition
            break
        worker.send_signal(signal.SIGCONT)
    assert stopped_for, "the stop never landed while a heatmap was being computed"
    try:
        started = time.monotonic()
        assert "hx-trigger" in explain_card(browser, photo_id, stopped_for)
        until = time.monotonic() + DEADLINE + 60
        while time.monotonic() < until and "hx-trigger" in (card := explain_card(browser, photo_id, stopped_for)):
            time.sleep(0.5)
        assert "hx-trigger" not in card  # stopped polling, by the deadline and not before
        assert time.monotonic() - started >= DEADLINE - 5
        assert f"/photos/{photo_id}/explain/{stopped_for}" in card  # the button to ask again is back
        assert 'data-state="done"' in card  # the analysis itself is untouched
    finally:
        worker.send_signal(signal.SIGCONT)
    wait_for_worker(client, worker)
