"""The page in a real browser: every way of adding a photo, the timeline, analysis, errors.

The real app (tiny random MedSigLIP) serves on a loopback port from a
background thread; Debian's Chromium, driven by Playwright, plays the user.
Playwright never downloads a browser here: without /usr/bin/chromium the
module is skipped. Every test opens a fresh browser context (a new session)
and asserts on what a person sees. A journal shared by the module records
console errors, CSP violations and any request to another origin; the last
test checks that it stayed empty.
"""

from __future__ import annotations

import base64
import io
import re
import time
from urllib.parse import urlsplit

import pytest

from tests.helpers import CHROMIUM  # noqa: E402
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import gate_sized_photo_bytes as photo_bytes, make_app, serving  # noqa: E402

TIMEOUT_MS = 15_000

# The page reports CSP violations to Python through an exposed function; an
# init script runs before any of the page's own scripts, so none is missed.
CSP_PROBE = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__privascanCsp(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} in ${event.sourceFile || "page"}`);
}, true);
"""


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serving(make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False), "browser-test-server") as url:
        yield url


@pytest.fixture(scope="module")
def journal() -> dict[str, list[str]]:
    """What must stay empty for the whole module (checked by the last test)."""
    return {"console errors": [], "page errors": [], "csp violations": [], "foreign requests": [], "requests": []}


@pytest.fixture
def page(server, chromium, journal, request):
    """A fresh session on the app's page; its console, CSP reports and requests go to the journal.

    A test that provokes an error on purpose lists the console messages it
    expects in ``page.expected_console`` (regular expressions).
    """
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, base_url=server)
    context.set_default_timeout(TIMEOUT_MS)
    test = request.node.name
    context.expose_function("__privascanCsp", lambda text: journal["csp violations"].append(f"{test}: {text}"))
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.expected_console = []

    def on_console(message):
        if message.type == "error" and not any(re.search(p, message.text) for p in page.expected_console):
            journal["console errors"].append(f"{test}: {message.text} ({message.location.get('url', '')})")

    def on_request(req):
        journal["requests"].append(req.url)
        parts = urlsplit(req.url)
        if parts.scheme in ("data", "blob"):
            return
        if f"{parts.scheme}://{parts.netloc}" != server:
            journal["foreign requests"].append(f"{test}: {req.method} {req.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: journal["page errors"].append(f"{test}: {error}"))
    page.on("request", on_request)
    page.goto("/")
    page.wait_for_function("() => window.htmx !== undefined")
    yield page
    context.close()


def cards(page):
    return page.locator("#timeline article.card")


def card_named(page, name: str):
    return page.locator("#timeline article.card").filter(has=page.locator(".photo-name", has_text=name))


def add_files(page, *files: tuple[str, str, bytes]):
    page.set_input_files("#photo-input", [{"name": n, "mimeType": m, "buffer": b} for n, m, b in files])


def dispatch_with_file(page, kind: str, target: str, name: str, mime: str, data: bytes, last_modified_ms: int | None = None):
    """Build a File from bytes inside the page, as a user's drop or paste carries it, and dispatch the event on ``target``."""
    page.evaluate(
        """([kind, target, name, mime, b64, lastModified]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const options = { type: mime };
          if (lastModified !== null) { options.lastModified = lastModified; }
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, options));
          const init = { bubbles: true, cancelable: true };
          const event = kind === "drop"
            ? new DragEvent("drop", { ...init, dataTransfer: transfer })
            : new ClipboardEvent("paste", { ...init, clipboardData: transfer });
          document.querySelector(target).dispatchEvent(event);
        }""",
        [kind, target, name, mime, base64.b64encode(data).decode("ascii"), last_modified_ms],
    )


def test_file_picker_adds_several_photos_under_a_date_heading(page):
    add_files(page, ("mole-a.jpg", "image/jpeg", photo_bytes(1)), ("mole-b.png", "image/png", photo_bytes(2, "PNG")),
              ("mole-c.jpg", "image/jpeg", photo_bytes(3)))
    expect(cards(page)).to_have_count(3)
    expect(page.locator("#messages")).to_contain_text("Added 3 photos.")
    days = page.locator("#timeline section.day")
    expect(days).to_have_count(1)
    expect(days.locator("h3")).to_contain_text("(3 photos)")
    for name in ("mole-a.jpg", "mole-b.png", "mole-c.jpg"):
        card = card_named(page, name)
        expect(card).to_be_visible()
        expect(card.locator(".state")).to_contain_text("Not analysed yet")
        # The thumbnail really loaded (served from memory by the app).
        expect(card.locator("img.thumbnail")).to_have_js_property("complete", True)
        assert card.locator("img.thumbnail").evaluate("img => img.naturalWidth") > 0


def test_keyboard_reaches_the_photo_picker_with_a_visible_focus(page):
    for _ in range(12):  # skip link, modes, the language picker, the settings, then the photo input
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "photo-input":
            break
    assert page.evaluate("document.activeElement.id") == "photo-input"
    # The input itself is visually hidden; its label, styled as a button, shows the focus.
    label = page.locator("label[for='photo-input']")
    assert label.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"


def test_drag_and_drop_adds_a_photo(page):
    # The file's own date (no EXIF here) decides its day in the timeline.
    noon_1_june_2023_ms = 1_685_620_800_000
    dispatch_with_file(page, "drop", "#drop-zone", "dropped.jpg", "image/jpeg", photo_bytes(4), noon_1_june_2023_ms)
    expect(cards(page)).to_have_count(1)
    card = card_named(page, "dropped.jpg")
    expect(card).to_be_visible()
    expect(page.locator("#timeline section.day h3")).to_contain_text("Thursday 1 June 2023")
    expect(card.get_by_label("Date taken")).to_have_value("2023-06-01")


def test_clipboard_paste_adds_a_photo(page):
    dispatch_with_file(page, "paste", "body", "image.png", "image/png", photo_bytes(5, "PNG"))
    expect(cards(page)).to_have_count(1)
    expect(cards(page).locator(".photo-name")).to_have_text(re.compile(r"^pasted-\d{8}-\d{6}\.png$"))


def test_camera_takes_a_photo(page):
    # Keep hold of every stream the page opens, to check that the camera really goes off.
    page.evaluate("""() => {
      window.__streams = [];
      const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (constraints) => {
        const stream = await open(constraints);
        window.__streams.push(stream);
        return stream;
      };
    }""")
    live_tracks = "() => window.__streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"
    page.get_by_text("Use the camera").click()
    page.get_by_role("button", name="Start camera").click()
    expect(page.locator("#camera-status")).to_contain_text("The camera is on")
    page.wait_for_function("() => { const v = document.getElementById('camera-preview'); return v.readyState >= 2 && v.videoWidth > 0; }")
    page.get_by_role("button", name="Take photo").click()
    expect(cards(page)).to_have_count(1)
    expect(cards(page).locator(".photo-name")).to_have_text(re.compile(r"^camera-\d{8}-\d{6}\.jpg$"))
    expect(page.locator("#camera-status")).to_contain_text("Photo taken")
    assert page.evaluate(live_tracks) == 1  # adding the photo does not interrupt the preview
    page.get_by_role("button", name="Stop camera").click()
    expect(page.locator("#camera-status")).to_have_text("The camera is off.")
    assert page.evaluate(live_tracks) == 0
    # A new kind of picture swaps only the timeline: the camera keeps running, with its Stop button.
    page.get_by_role("button", name="Start camera").click()
    expect(page.locator("#camera-status")).to_contain_text("The camera is on")
    page.get_by_label("Kind of picture").select_option(index=1)
    expect(page.locator("#messages")).to_contain_text("Settings saved.")
    assert page.evaluate(live_tracks) == 1
    expect(page.get_by_role("button", name="Stop camera")).to_be_enabled()
    # A new modality re-renders the whole workspace, camera panel included: the camera must go off with it.
    page.get_by_label("Modality").select_option(index=1)
    page.wait_for_function(f"() => ({live_tracks})() === 0")


def test_changing_a_date_regroups_the_timeline(page):
    add_files(page, ("first.jpg", "image/jpeg", photo_bytes(6)), ("second.jpg", "image/jpeg", photo_bytes(7)))
    expect(cards(page)).to_have_count(2)
    expect(page.locator("#timeline section.day")).to_have_count(1)
    card = card_named(page, "second.jpg")
    card.get_by_label("Date taken").fill("2024-03-15")
    card.get_by_role("button", name="Save date").click()
    new_day = page.locator("#timeline section.day").filter(has=page.locator("time[datetime='2024-03-15']"))
    expect(new_day).to_have_count(1)
    expect(new_day.locator("h3")).to_contain_text("Friday 15 March 2024")
    expect(new_day.locator(".photo-name")).to_have_text(["second.jpg"])
    expect(page.locator("#timeline section.day")).to_have_count(2)
    # Newest day first: the untouched photo's day stays on top.
    expect(page.locator("#timeline section.day").first.locator(".photo-name")).to_have_text(["first.jpg"])
    expect(card_named(page, "second.jpg").locator(".hint")).to_contain_text("set by you")
    expect(page.locator("#messages")).to_contain_text("Moved “second.jpg” to Friday 15 March 2024.")


def test_analysing_a_photo_shows_a_ranked_result_and_heatmap(page, monkeypatch):
    add_files(page, ("spot.jpg", "image/jpeg", photo_bytes(8)))
    card = card_named(page, "spot.jpg")
    expect(card.locator(".state")).to_contain_text("Not analysed yet")
    # Record every state the card shows in words (it is swapped by each poll) until it is done.
    page.evaluate(
        """(id) => {
          window.__states = [];
          new MutationObserver(() => {
            const state = document.querySelector(`#${id} .state`);
            const text = state ? state.textContent.replace(/\\s+/g, " ").trim() : "";
            if (text && window.__states.at(-1) !== text) { window.__states.push(text); }
          }).observe(document.getElementById("main"), { subtree: true, childList: true, characterData: true });
        }""",
        card.get_attribute("id"),
    )
    card.get_by_role("button", name="Analyze spot.jpg", exact=True).click()
    expect(card.locator(".state")).to_have_text(re.compile(r"Analysed"))
    states = page.evaluate("window.__states")
    assert re.search(r"Queued|Analysing", states[0]), states
    assert states[-1].endswith("Analysed"), states
    result = card.locator("section.result")
    expect(result.locator(".risk strong")).to_have_text(re.compile(r"(High|Moderate|Low) concern|Unclear"))
    expect(result).to_contain_text("Most likely:")
    ranking = result.locator("ol.ranking > li")
    assert ranking.count() >= 2
    percentages = [float(t.rstrip(" %")) for t in result.locator("ol.ranking .pct").all_inner_texts()]
    assert percentages == sorted(percentages, reverse=True)
    heatmap = result.get_by_role("img", name=re.compile(r"^Heatmap of where the model looked"))
    expect(heatmap).to_be_visible()
    expect(heatmap).to_have_js_property("complete", True)
    assert heatmap.evaluate("img => img.naturalWidth") > 0
    expect(card.get_by_role("button", name="Analyze again")).to_be_enabled()

    # The runner-up's heatmap on demand. A real model takes seconds, longer than
    # one poll, so make the tiny one slow too: the card must keep polling until it arrives.
    import webapp.jobs

    slow_explain = webapp.jobs.explain_condition

    def explain_condition(*args, **kwargs):
        time.sleep(2.5)
        return slow_explain(*args, **kwargs)

    monkeypatch.setattr(webapp.jobs, "explain_condition", explain_condition)
    second = result.locator("ol.ranking > li").nth(1).locator(".label").inner_text()
    second = re.sub(r"^\d+\.\s*", "", second)
    card.get_by_role("button", name=f"Show heatmap for {second}").click()
    expect(card.get_by_role("status")).to_have_text("Computing the second heatmap…")
    extra = card.get_by_role("img", name=f"Heatmap for {second}")
    expect(extra).to_be_visible(timeout=10_000)
    assert extra.evaluate("img => img.naturalWidth") > 0
    expect(card.get_by_text("Computing the second heatmap…")).to_have_count(0)


DISPLAYED_PIXELS = """(img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let text = "";
  for (let i = 0; i < data.length; i += 8192) { text += String.fromCharCode.apply(null, data.subarray(i, i + 8192)); }
  return [canvas.width, canvas.height, btoa(text)];
}"""


def displayed_pixels(image_locator):
    """The RGBA pixels the browser shows for an <img>, as a numpy array."""
    import numpy as np

    width, height, data = image_locator.evaluate(DISPLAYED_PIXELS)
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)


def server_pixels(page, path: str):
    """The server's current bytes for a picture (the unversioned URL) and their RGBA pixels."""
    import numpy as np
    from PIL import Image

    response = page.request.get(path)
    assert response.ok, path
    return response.body(), np.asarray(Image.open(io.BytesIO(response.body())).convert("RGBA"))


def test_pictures_always_match_the_text_after_analysing_again(page):
    """Analyse, switch the kind of picture, analyse again: the card shows the new run's crop and heatmap."""
    import numpy as np

    add_files(page, ("again.jpg", "image/jpeg", photo_bytes(12)))
    card = card_named(page, "again.jpg")
    photo_id = card.get_attribute("id").removeprefix("photo-")
    expect(card.locator(".will-analyse-as")).to_contain_text("as Skin (dermatology), Clinical photo")
    card.get_by_role("button", name="Analyze again.jpg", exact=True).click()
    expect(card.locator(".state")).to_have_text(re.compile(r"Analysed"))
    expect(card.locator(".made-with")).to_contain_text("Clinical photo")
    heatmap = card.get_by_role("img", name=re.compile(r"^Heatmap of where the model looked"))
    expect(heatmap).to_have_js_property("complete", True)
    first_src = heatmap.get_attribute("src")
    first_bytes, first_pixels = server_pixels(page, f"/photos/{photo_id}/heatmap.png")
    assert np.array_equal(displayed_pixels(heatmap), first_pixels)

    page.get_by_label("Kind of picture").select_option(label="Dermoscopy")
    card = card_named(page, "again.jpg")
    expect(card.locator(".will-analyse-as")).to_contain_text("Dermoscopy")
    card.get_by_role("button", name="Analyze again").click()
    expect(card.locator(".made-with")).to_contain_text("Dermoscopy", timeout=30_000)
    heatmap = card.get_by_role("img", name=re.compile(r"^Heatmap of where the model looked"))
    crop = card.get_by_role("img", name=re.compile(r"^The analysed crop"))
    expect(heatmap).to_have_js_property("complete", True)
    expect(crop).to_have_js_property("complete", True)
    second_src = heatmap.get_attribute("src")
    assert second_src != first_src  # a URL of its own: no cached copy of the first run can answer it
    assert "/r/" in second_src and "/r/" in crop.get_attribute("src")
    second_bytes, second_pixels = server_pixels(page, f"/photos/{photo_id}/heatmap.png")
    assert second_bytes != first_bytes  # the other template set explains differently
    assert np.array_equal(displayed_pixels(heatmap), second_pixels)  # PNG: exactly the server's new pixels
    _, crop_pixels = server_pixels(page, f"/photos/{photo_id}/crop.jpg")
    shown = displayed_pixels(crop).astype(int)
    assert shown.shape == crop_pixels.shape and np.abs(shown - crop_pixels).mean() < 2.0  # JPEG decoders may differ by a level
    # The first run's picture URL no longer answers with a picture.
    assert page.request.get(first_src).status == 404


def test_a_bad_file_gives_a_readable_message_and_keeps_the_photos(page):
    add_files(page, ("keep.jpg", "image/jpeg", photo_bytes(9)))
    expect(cards(page)).to_have_count(1)
    # The failed upload's status is logged by the browser and by htmx; that is expected here.
    page.expected_console += [r"status of 4\d\d", r"Response Status Error Code 4\d\d"]
    add_files(page, ("x.jpg", "image/jpeg", b"this is not a picture, just some text\n" * 20))
    error = page.locator("#messages .message-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("“x.jpg” was not added")
    assert "Traceback" not in error.inner_text()
    expect(cards(page)).to_have_count(1)
    expect(card_named(page, "keep.jpg")).to_be_visible()
    # The picker still works after the error.
    add_files(page, ("after.jpg", "image/jpeg", photo_bytes(10)))
    expect(cards(page)).to_have_count(2)


def test_no_console_errors_csp_violations_or_foreign_requests(page, journal, server):
    """Runs last: checks the journal of the whole module, after a last upload of its own."""
    add_files(page, ("last.jpg", "image/jpeg", photo_bytes(11)))
    expect(cards(page)).to_have_count(1)
    # The CSP probe is live: an inline style, which the policy forbids, is reported
    # (and Chromium logs the refusal on the console, expected here).
    page.expected_console.append(r"Content Security Policy")
    page.evaluate("() => { const s = document.createElement('style'); s.textContent = 'body {}'; document.head.appendChild(s); }")
    probe: list[str] = []
    for _ in range(50):  # the report reaches Python asynchronously
        probe = [v for v in journal["csp violations"] if "style-src" in v and "test_no_console_errors" in v]
        if probe:
            break
        page.wait_for_timeout(50)
    assert probe, "the securitypolicyviolation listener did not report a deliberate violation"
    for entry in probe:
        journal["csp violations"].remove(entry)

    assert any(url.startswith(server) for url in journal["requests"])
    problems = {kind: entries for kind, entries in journal.items() if kind != "requests" and entries}
    assert not problems, problems
