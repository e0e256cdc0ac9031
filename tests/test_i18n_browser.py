"""The language picker in a real browser: Accept-Language first, the picker's choice remembered, HTMX swaps in it too.

Debian's Chromium (driven by Playwright, never a downloaded browser) sends
the Accept-Language of its context's locale, as a person's browser does.
"""

from __future__ import annotations

import pytest

from tests.helpers import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import make_app, photo_bytes, serving  # noqa: E402

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serving(make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False), "i18n-browser-test-server") as url:
        yield url


def open_page(chromium, server, locale: str):
    context = chromium.new_context(locale=locale, base_url=server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto("/")
    page.wait_for_function("() => window.htmx !== undefined")
    return context, page, problems


def test_the_browser_language_is_used_first(chromium, server):
    context, page, problems = open_page(chromium, server, "es-ES")
    try:
        expect(page.locator("html")).to_have_attribute("lang", "es")
        expect(page.get_by_role("heading", name="Sus fotos")).to_be_visible()
        expect(page.get_by_label("Idioma")).to_have_value("es")
        assert not problems
    finally:
        context.close()


def test_the_picker_switches_the_language_and_remembers_it(chromium, server):
    context, page, problems = open_page(chromium, server, "en-US")
    try:
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.get_by_role("heading", name="Your photos")).to_be_visible()

        # From the keyboard: the picker is labelled, and its button applies the choice (no change of page on select).
        page.get_by_label("Language").select_option("es")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        page.get_by_role("button", name="Change language").click()
        expect(page.locator("html")).to_have_attribute("lang", "es")
        expect(page.get_by_role("heading", name="Sus fotos")).to_be_visible()

        # Only the language code is kept, in its own cookie.
        (cookie,) = [c for c in context.cookies() if c["name"] == "privascan_lang"]
        assert cookie["value"] == "es" and cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        # Remembered across pages and reloads, although the browser still asks for English.
        page.reload()
        expect(page.get_by_role("heading", name="Sus fotos")).to_be_visible()
        page.get_by_role("link", name="Exploración en directo").click()
        expect(page.get_by_role("heading", name="Exploración en directo", exact=True)).to_be_visible()
        page.get_by_role("link", name="Fotos", exact=True).click()

        # HTMX swaps come back in the chosen language as well.
        page.set_input_files("#photo-input", [{"name": "foto.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(7)}])
        expect(page.locator("#messages")).to_contain_text("Se ha añadido 1 foto.")
        card = page.locator("#timeline article.card")
        expect(card.get_by_role("button", name="Borrar foto.jpg")).to_be_visible()
        expect(card).to_contain_text("Aún sin analizar")

        # And back to English.
        page.get_by_label("Idioma").select_option("en")
        page.get_by_role("button", name="Cambiar idioma").click()
        expect(page.get_by_role("heading", name="Your photos")).to_be_visible()
        expect(page.locator("#timeline article.card")).to_contain_text("Not analysed yet")
        assert not problems
    finally:
        context.close()
