"""Scale-out mode in a real browser: Chromium's requests alternate between two gunicorn replicas.

The fleet is the production one (tests/fleet.py: a real redis-server, two
``gunicorn --config webapp/gunicorn_conf.py`` web replicas, one ``privascan
worker`` on the tiny model). Between Chromium and the replicas sits a
loopback round-robin TCP proxy, a load balancer without sticky sessions; the
replicas answer ``Connection: close`` (``--keep-alive 0``), so each request
goes to the next replica. The person adds photos, analyses them, sees the
result and its heatmap, runs a live scan from Chromium's fake camera, and
clears the session; afterwards a Redis SCAN finds none of its keys.
Console errors, CSP violations and requests to any other origin fail the test.
"""

from __future__ import annotations

import io
import re
from urllib.parse import urlsplit

import pytest
import redis

from tests.helpers import CHROMIUM  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.fleet import RoundRobinProxy, fleet  # noqa: E402
from tests.helpers import CHROMIUM_ARGS  # noqa: E402
from tests.synthetic import make_lesion_photo  # noqa: E402
from tests.test_live_browser import write_y4m  # noqa: E402

TIMEOUT_MS = 60_000  # every process shares this machine's cores with the browser


def photo(seed: int) -> bytes:
    image, _ = make_lesion_photo(seed, width=800, height=600)  # passes the quality gate's resolution check
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def camera_clip(tmp_path):
    """Chromium's fake camera plays a short clip of a synthetic lesion (test data, not a person's)."""
    still = tmp_path / "lesion.png"
    image, _ = make_lesion_photo(60, width=800, height=600)
    image.save(still)
    return write_y4m(still, tmp_path / "lesion.y4m")


def test_a_browser_session_alternating_between_two_replicas(tiny_model_dir, redis_url, camera_clip):
    client = redis.Redis.from_url(redis_url)
    problems: list[str] = []
    with fleet(redis_url, tiny_model_dir, replica_args=("--keep-alive", "0")) as (ports, _, _), \
            sync_api.sync_playwright() as playwright:
        proxy = RoundRobinProxy(ports)
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera_clip}"])
        context = chromium.new_context(viewport={"width": 1280, "height": 1000}, base_url=proxy.url)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script("""document.addEventListener("securitypolicyviolation",
            (event) => console.error(`CSP: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`), true);""")
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: dialog.accept())  # "Delete every photo ...?"

        def on_request(request):
            parts = urlsplit(request.url)
            if parts.scheme not in ("data", "blob") and f"{parts.scheme}://{parts.netloc}" != proxy.url:
                problems.append(f"foreign request: {request.url}")

        page.on("request", on_request)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            page.goto("/")
            page.wait_for_function("() => window.htmx !== undefined")
            expect(page.locator("#model-status")).to_contain_text("1 worker ready")
            page.set_input_files("#photo-input", [{"name": "Ms Brown arm.jpg", "mimeType": "image/jpeg", "buffer": photo(1)},
                                                  {"name": "Ms Brown back.jpg", "mimeType": "image/jpeg", "buffer": photo(2)}])
            cards = page.locator("#timeline article.card")
            expect(cards).to_have_count(2)
            session_keys = set(client.scan_iter("privascan:session:*"))
            (store_key,) = client.scan_iter("privascan:s:*")

            page.get_by_role("button", name="Analyze all").click()
            for index in range(2):
                expect(cards.nth(index).locator(".state")).to_have_text(re.compile(r"Analysed"))
            card = cards.filter(has=page.locator(".photo-name", has_text="Ms Brown arm.jpg"))
            expect(card.locator(".risk strong")).to_have_text(re.compile(r"(High|Moderate|Low) concern|Unclear"))
            heatmap = card.get_by_role("img", name=re.compile(r"^Heatmap of where the model looked"))
            expect(heatmap).to_be_visible()
            expect(heatmap).to_have_js_property("complete", True)
            assert heatmap.evaluate("img => img.naturalWidth") > 0  # the PNG came back, from whichever replica

            page.get_by_role("link", name="Live scan").click()
            expect(page).to_have_url(re.compile(r"/live$"))
            page.locator("#live-start").click()
            expect(page.locator("#live-stop")).to_be_enabled()
            expect(page.locator("#live-result")).to_contain_text(re.compile(r"Frame \d+: [\d.]+ ms on the server"))
            expect(page.locator("#live-count")).not_to_have_text("0")
            page.locator("#live-stop").click()
            expect(page.locator("#live-start")).to_be_enabled()

            page.get_by_role("link", name="Photos", exact=True).click()
            expect(cards).to_have_count(2)  # the session, photos and results held across replicas
            page.get_by_role("button", name="Clear session").click()
            expect(page.locator("#messages")).to_contain_text("Everything in this session was deleted from the server.")
            expect(cards).to_have_count(0)
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for the modules that run after this one
            context.close()
            chromium.close()
            proxy.close()
    assert problems == []
    print(f"requests per replica: {dict(proxy.requests)}")
    assert all(proxy.requests[port] >= 10 for port in ports), proxy.requests  # both replicas served this person
    assert not client.exists(store_key)
    assert list(client.scan_iter("privascan:s:*")) == []  # photos, results, live state, lesions: one hash, gone
    assert not session_keys & set(client.scan_iter("privascan:session:*"))
    assert list(client.scan_iter("privascan:job:*")) == []  # no job data left behind
