"""The README's screenshots, made from demo mode by Debian's Chromium (Playwright), keyboard first.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

The app runs in this process in demo mode (tiny random MedSigLIP: results are
meaningless, and every page says so) on a loopback port; the photos are
synthetic lesions drawn in memory (scripts/liveserver.py) and the live scan's
camera is Chromium's own fake device. Each step is done as a person would,
from the keyboard where the page offers it, at 1366x900 (desktop) and
390x844 (a touch phone). The only files written are the PNGs under --out:
they contain no user data.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scripts.liveserver import encode  # noqa: E402
from tests.synthetic import make_lesion_photo  # noqa: E402  (the synthetic lesions the tests use: they pass the quality gate)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def serve():
    from werkzeug.serving import make_server

    from webapp import create_app

    app = create_app({"DEMO_MODEL": True, "SESSION_COOKIE_SECURE": False})
    app.extensions["privascan_models"].wait(300)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return app, httpd, f"http://127.0.0.1:{httpd.server_port}"


def photos(*seeds: int) -> list[dict]:
    return [{"name": f"mole-{seed}.jpg", "mimeType": "image/jpeg", "buffer": encode(make_lesion_photo(seed, 1024, 768)[0], "JPEG")}
            for seed in seeds]


def tab_to(page, selector: str, limit: int = 80) -> None:
    """Press Tab until ``selector`` has focus (the keyboard path a person would take)."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise RuntimeError(f"Tab never reached {selector}")


def wait_analysed(page, count: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#timeline .state[data-state=done]').length >= {count}",
                           timeout=120_000)


def desktop(browser, base: str, out: Path) -> list[Path]:
    context = browser.new_context(base_url=base, **DESKTOP)
    page = context.new_page()
    page.goto("/")
    page.wait_for_function("() => window.htmx !== undefined")
    shots = [out / "01-first-page.png"]
    page.screenshot(path=shots[-1])

    # The keyboard reaches the photo picker; the files are what a person would choose in the dialog.
    tab_to(page, "#photo-input")
    page.set_input_files("#photo-input", photos(1, 2, 3))
    page.wait_for_selector("#timeline article.card:nth-of-type(3)")
    tab_to(page, "#timeline button[id^=analyze-]")
    page.keyboard.press("Enter")
    wait_analysed(page, 1)
    page.locator("#timeline article.card").first.scroll_into_view_if_needed()
    shots.append(out / "02-analysed-photo.png")
    page.screenshot(path=shots[-1])

    # A duplicate, refused with the name of the photo it duplicates.
    page.set_input_files("#photo-input", [{**photos(1)[0], "name": "same-again.jpg"}])
    page.wait_for_selector("#messages .message")
    page.evaluate("window.scrollTo(0, 0)")
    shots.append(out / "03-duplicate-named.png")
    page.screenshot(path=shots[-1])

    page.goto("/?debug=1")
    page.locator(".debug-panel").scroll_into_view_if_needed()
    shots.append(out / "04-debug-panel.png")
    page.screenshot(path=shots[-1])

    # Delete from the keyboard: focus lands on Undo.
    page.goto("/")
    tab_to(page, "#timeline button[id^=delete-]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#undo-delete:focus")
    page.evaluate("window.scrollTo(0, 0)")
    shots.append(out / "05-delete-with-undo.png")
    page.screenshot(path=shots[-1])
    context.close()
    return shots


def phone(browser, base: str, out: Path) -> list[Path]:
    context = browser.new_context(base_url=base, **PHONE)
    page = context.new_page()
    page.goto("/")
    page.wait_for_function("() => window.htmx !== undefined")
    shots = [out / "06-phone-first-page.png"]
    page.screenshot(path=shots[-1])
    page.set_input_files("#photo-input", photos(4))
    page.wait_for_selector("#timeline article.card")
    page.locator("#timeline button[id^=analyze-]").first.focus()
    page.keyboard.press("Enter")
    wait_analysed(page, 1)
    page.locator("#timeline article.card .tier").first.scroll_into_view_if_needed()
    shots.append(out / "07-phone-result.png")
    page.screenshot(path=shots[-1])

    page.goto("/live")
    page.wait_for_function("() => window.htmx !== undefined")
    page.locator("#live-start").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#live-result[data-frame-number]", timeout=60_000)
    page.wait_for_timeout(1500)
    shots.append(out / "08-phone-live-scan.png")
    page.screenshot(path=shots[-1])
    page.locator("#live-stop").click()
    context.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    app, httpd, base = serve()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            shots = desktop(browser, base, args.out) + phone(browser, base, args.out)
            browser.close()
    finally:
        httpd.shutdown()
        app.extensions["privascan_worker"].stop()
    for shot in shots:
        print(shot.relative_to(REPO) if shot.is_relative_to(REPO) else shot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
