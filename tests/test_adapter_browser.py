"""The page with a clinic's adapter, in Debian's Chromium: the result says which scorer answered; the debug switch compares.

The adapter is the one ``tests/test_adapter_app.py`` fits with ``privascan adapt``
on colour-and-shape photos; the page is served by the real app on loopback.
"""

from __future__ import annotations

import io
import re

import pytest

from tests.helpers import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import CHROMIUM_ARGS, make_app, serving  # noqa: E402
from tests.synthetic import make_kind_photo  # noqa: E402
from tests.test_adapter_app import adapter_file  # noqa: E402,F401  (the module's fitted adapter fixture)
from webapp.adapter import load_adapter  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_file):  # noqa: F811
    app = make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False, ADAPTER=str(adapter_file))
    with serving(app, "adapter-browser-test-server") as url:
        yield url


def test_result_names_the_adapter_and_the_debug_panel_switches_it_off(server, adapter_file):  # noqa: F811
    adapter = load_adapter(adapter_file)
    buffer = io.BytesIO()
    make_kind_photo("triangle_blue", 77_001).save(buffer, format="PNG")
    foreign = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=server)
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.on("request", lambda req: None if req.url.startswith((server, "data:", "blob:")) else foreign.append(req.url))
            page.goto("/?debug=1")
            page.wait_for_function("() => window.htmx !== undefined")
            page.set_input_files("#photo-input", [{"name": "spot.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
            card = page.locator("#timeline article.card").first
            card.get_by_role("button", name="Analyze spot.png", exact=True).click()
            # A 200x160 test photo is below the quality gate's resolution: the user analyses it anyway.
            expect(card.locator(".state")).to_have_text(re.compile(r"Can't assess"))
            card.get_by_role("button", name="Analyse anyway").click()
            expect(card.locator(".state")).to_have_text(re.compile(r"Analysed, low quality"))
            scorer = card.locator(".scorer")
            expect(scorer).to_contain_text(f"Scored by this clinic's adapter {adapter.adapter_id}")
            expect(scorer).to_contain_text("It knows only 3 conditions")
            expect(card.locator(".headline-label")).to_have_text("Melanoma")
            expect(card.locator("ol.ranking > li")).to_have_count(3)

            switch = page.get_by_label(re.compile(r"Use the clinic's adapter"))
            expect(switch).to_be_checked()
            switch.uncheck()
            page.get_by_role("button", name="Apply to stored results").click()
            card = page.locator("#timeline article.card").first
            expect(card.locator(".scorer")).to_contain_text("switched off in the debug panel")
            assert card.locator("ol.ranking > li").count() > 3  # the whole bank, zero-shot, from the same pass
            page.get_by_label(re.compile(r"Use the clinic's adapter")).check()
            page.get_by_role("button", name="Apply to stored results").click()
            expect(page.locator("#timeline article.card").first.locator(".scorer")).to_contain_text("Scored by this clinic's adapter")
        finally:
            browser.close()
    assert foreign == []
