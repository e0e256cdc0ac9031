"""An automated accessibility scan (axe-core) of every page state, in a real browser.

axe-core comes from the npm registry (package.json's devDependencies, pinned
by package-lock.json; `make test` installs it into node_modules/) and is
injected into the page by the test only: the app never serves it. The page's
CSP forbids inline scripts, so these browser contexts bypass it to inject
axe (the other browser modules keep it and check for violations).

Each state must have no serious or critical violation (WCAG 2.0-2.2 A and AA
rules plus axe's best practices); the counts of every impact are printed,
per state, for the record (`pytest -s`). What a scan cannot judge is checked
by hand and listed in docs/accessibility.md.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import CHROMIUM, REPO  # noqa: E402
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
if not AXE.exists():
    pytest.skip(f"axe-core is not installed ({AXE}); `make test` (npm ci) installs it", allow_module_level=True)

from tests.helpers import gate_sized_photo_bytes as photo_bytes, make_app, serving  # noqa: E402

TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
RESULTS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    app = make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False)
    app.config["DEMO_MODEL"] = True  # the banner is part of every page in demo mode: scan it too
    with serving(app, "axe-test-server") as url:
        yield url


@pytest.fixture
def context_for(server, chromium):
    made = []

    def make(**options):
        context = chromium.new_context(base_url=server, bypass_csp=True, **{**DESKTOP, **options})
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def scan(page, state: str) -> None:
    """Run axe on the page as it is now; fail on any serious or critical violation."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("(tags) => axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] })", TAGS)
    counts = {"critical": 0, "serious": 0, "moderate": 0, "minor": 0}
    for violation in result["violations"]:
        counts[violation["impact"] or "minor"] += 1
    RESULTS[state] = {**counts, "rules": sorted({v["id"] for v in result["violations"]})}
    bad = [{"rule": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:5]]}
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{state}: {json.dumps(bad, indent=1)}"


def start(context, path="/"):
    page = context.new_page()
    page.goto(path)
    page.wait_for_function("() => window.htmx !== undefined")
    return page


def add(page, *names_and_seeds):
    page.set_input_files("#photo-input", [{"name": n, "mimeType": "image/jpeg", "buffer": photo_bytes(s)} for n, s in names_and_seeds])
    expect(page.locator("#timeline article.card")).to_have_count(len(names_and_seeds))


def analyse(page, name):
    card = page.locator("#timeline article.card").filter(has=page.locator(".photo-name", has_text=name))
    card.get_by_role("button", name=f"Analyze {name}", exact=True).click()
    expect(card.locator(".state")).to_have_text(re.compile("Analysed"), timeout=30_000)
    return card


def test_photos_page_states(context_for):
    page = start(context_for())
    scan(page, "photos: empty, guide open")
    add(page, ("one.jpg", 1), ("two.jpg", 2))
    scan(page, "photos: two photos, message shown")
    card = analyse(page, "one.jpg")
    card.locator("details.details summary").click()
    scan(page, "photos: analysed result, details open")
    page.get_by_text("Use the camera").click()
    scan(page, "photos: camera panel open")
    page.locator("#timeline article.card").nth(1).get_by_role("button", name=re.compile("^Delete")).click()
    expect(page.get_by_role("button", name=re.compile("^Undo deleting"))).to_be_visible()
    scan(page, "photos: deleted, Undo offered")
    page.set_input_files("#photo-input", [{"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture" * 20}])
    expect(page.locator("#messages .message-error")).to_be_visible()
    scan(page, "photos: error message")
    idle = int(page.evaluate("document.body.dataset.idleSeconds"))
    page.evaluate(f"() => {{ window.privascanSessionTimer.lastActivity(Date.now() - {(idle - 60) * 1000}); window.privascanSessionTimer.check(); }}")
    expect(page.get_by_role("alertdialog")).to_be_visible()
    scan(page, "photos: session expiry warning")


def test_debug_lesion_report_and_error_pages(context_for):
    page = start(context_for(), "/?debug=1")
    add(page, ("spot.jpg", 3))
    card = analyse(page, "spot.jpg")
    page.locator(".debug-panel summary").click()
    scan(page, "photos ?debug: calibration panel open")
    card.get_by_text("Group as a lesion").click()
    card.get_by_role("button", name="Group").click()
    expect(page.locator("#messages")).to_contain_text("Started the lesion")
    scan(page, "photos: grouped as a lesion")
    page.locator("#timeline .lesion-name a").first.click()
    expect(page.locator(".lesion-page")).to_be_visible()
    scan(page, "lesion comparison page")
    page.goto("/report/session")
    scan(page, "printable session report")
    page.goto("/no-such-page")
    scan(page, "404 page")


def test_live_page_states(context_for):
    page = start(context_for(), "/live")
    scan(page, "live: before start")
    page.locator("#live-thresholds summary").click()
    page.locator("#threshold-melanoma").fill("2")
    page.locator("#threshold-melanoma").press("Tab")
    expect(page.locator("#messages .message-error")).to_be_visible()
    scan(page, "live: thresholds open, a value refused")
    # Chromium's built-in fake camera shows no lesion: with a zero melanoma threshold
    # the empty frames still raise an alert (score 0 reaches 0), which fills every part of the page.
    names = page.locator("#live-thresholds input[type=number]").evaluate_all("fields => fields.map((f) => f.name)")
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    saved = page.request.post("/live/thresholds", form={n: "0" if n == "threshold_melanoma" else "1" for n in names},
                              headers={"X-CSRF-Token": token})
    assert saved.ok
    page.reload()
    page.locator("#live-start").click()
    expect(page.locator("#live-result .live-alert")).to_be_visible(timeout=30_000)
    page.locator("#live-stop").click()
    scan(page, "live: alert raised and logged, stopped")


def test_phone_states(context_for):
    page = start(context_for(**PHONE))
    add(page, ("phone.jpg", 4))
    analyse(page, "phone.jpg")
    scan(page, "phone: analysed result")
    page.goto("/live")
    scan(page, "phone: live before start")


def test_print_the_results():
    """Runs last: the counts per state (all zero for serious and critical, or an earlier test failed)."""
    assert RESULTS, "no state was scanned"
    width = max(map(len, RESULTS))
    print()
    for state, counts in RESULTS.items():
        print(f"axe {state:<{width}}  " + "  ".join(f"{impact} {count}" for impact, count in counts.items() if impact != "rules")
              + (f"  ({', '.join(counts['rules'])})" if counts["rules"] else ""))
