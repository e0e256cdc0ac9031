"""Live scan in a real browser: Chromium's fake camera plays a clip made from the NCI photo.

The real app (tiny random MedSigLIP, real localizer) serves on a loopback
port; Debian's Chromium, driven by Playwright, is the user. Its fake camera
(``--use-file-for-fake-video-capture``) plays a short YUV4MPEG2 clip written
into pytest's tmp folder from the NCI melanoma photo. The user lowers the
melanoma threshold, starts the scan, and must see frames processed (the fps
figure), an alert on screen, spoken and logged, a heatmap of the last frame,
and a CSV download holding the alert. Console errors, CSP violations and
requests to any other origin fail the test.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.helpers import CHROMIUM  # noqa: E402
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import CHROMIUM_ARGS, make_app, serving  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NCI_PHOTO = SHARED_DATA / "nci-melanoma-1800x1010.jpg"
TIMEOUT_MS = 20_000
CLIP_SIZE = (640, 360)
CLIP_FRAMES = 6

# Runs before the page's scripts: reports CSP violations, and keeps a copy of
# what the page asks the browser's own speech engine to say (then lets it speak).
PROBE = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__privascanCsp(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
}, true);
window.__spoken = [];
if (window.speechSynthesis) {
  const speak = window.speechSynthesis.speak.bind(window.speechSynthesis);
  window.speechSynthesis.speak = (utterance) => { window.__spoken.push(utterance.text); speak(utterance); };
}
"""


def write_y4m(photo: Path, path: Path, size=CLIP_SIZE, frames: int = CLIP_FRAMES) -> Path:
    """A short 4:2:0 YUV4MPEG2 clip of the photo (BT.601, studio range), panning a few pixels per frame."""
    width, height = size
    wide = Image.open(photo).convert("RGB").resize((width + 2 * frames, height + 2 * frames), Image.Resampling.BILINEAR)
    with path.open("wb") as clip:
        clip.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for index in range(frames):
            rgb = np.asarray(wide, dtype=np.float32)[index:index + height, index:index + width] / 255.0
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
            u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
            v = 128 + 112.0 * r - 93.786 * g - 18.214 * b

            def half(plane):  # 2x2 average: the 4:2:0 chroma planes
                return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

            clip.write(b"FRAME\n")
            for plane in (y, half(u), half(v)):
                clip.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    if not NCI_PHOTO.exists():
        pytest.skip(f"the NCI photo is not at {NCI_PHOTO}")
    return write_y4m(NCI_PHOTO, tmp_path_factory.mktemp("fake-camera") / "nci.y4m")


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serving(make_app(tiny_model_dir, SESSION_COOKIE_SECURE=False), "live-browser-test-server") as url:
        yield url


@pytest.fixture(scope="module")
def chromium(clip):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"],
        )
        yield browser
        browser.close()


def test_the_clip_is_a_valid_y4m(clip):
    data = clip.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header == b"YUV4MPEG2 W640 H360 F10:1 Ip A1:1 C420jpeg"
    frame = len(b"FRAME\n") + 640 * 360 * 3 // 2
    assert len(rest) == CLIP_FRAMES * frame and rest.count(b"FRAME\n") >= CLIP_FRAMES


def test_live_scan_raises_speaks_logs_and_explains_an_alert(server, chromium):
    problems: list[str] = []
    # A browser in New York: times on screen and in the log are its own, with the zone named (issue 16).
    context = chromium.new_context(viewport={"width": 1280, "height": 1000}, base_url=server, accept_downloads=True,
                                   timezone_id="America/New_York")
    context.set_default_timeout(TIMEOUT_MS)
    context.expose_function("__privascanCsp", lambda text: problems.append(f"CSP: {text}"))
    context.add_init_script(PROBE)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_request(request):
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob") and f"{parts.scheme}://{parts.netloc}" != server:
            problems.append(f"foreign request: {request.url}")

    page.on("request", on_request)
    try:
        page.goto("/")
        page.get_by_role("link", name="Live scan").click()
        expect(page).to_have_url(re.compile(r"/live$"))
        expect(page.locator("#live-status")).to_have_text("The camera is off.")
        # Nothing in view yet: nothing to explain, so the button is off (it used to answer 409 at the top of the page).
        expect(page.locator("#live-explain-button")).to_be_disabled()

        # A very low melanoma threshold: an alert must follow once three frames agree.
        page.locator("#live-thresholds summary").click()
        page.locator("#threshold-melanoma").fill("0.001")
        page.locator("#threshold-melanoma").press("Tab")
        expect(page.locator("#messages")).to_contain_text("Alert thresholds saved")
        expect(page.locator("#threshold-melanoma")).to_have_value("0.001")
        page.locator("#live-speech").check()

        page.locator("#live-start").click()
        expect(page.locator("#live-stop")).to_be_enabled()
        expect(page.locator("#live-result")).to_contain_text("A lesion is in view")
        expect(page.locator("#live-fps")).to_have_text(re.compile(r"^\d+(\.\d)?$"))  # frames are flowing
        expect(page.locator("#live-latency")).to_have_text(re.compile(r"^\d+ ms \(average \d+ ms\)$"))
        expect(page.locator("#live-count")).not_to_have_text("0")
        expect(page.locator("#live-result")).to_contain_text(re.compile(r"Frame \d+: [\d.,]+ ms on the server"))

        alert = page.locator("#live-result .live-alert").first
        expect(alert).to_contain_text("Alert: Melanoma")
        expect(alert).to_contain_text("threshold 0.1 %")
        expect(page.locator("#live-log tbody")).to_contain_text("Melanoma")
        expect(page.locator("#live-log tbody")).to_contain_text("ICD-10 C43.9")
        page.wait_for_function("window.__spoken.length > 0")
        assert page.evaluate("window.__spoken")[0].startswith("Alert: Melanoma, ")
        # Speech says the figure the screen shows (2.5 percent, not 2), and the frames the average was over.
        shown = re.search(r"([\d.]+) % average over the last (\d+) frames?", alert.inner_text())
        assert shown, alert.inner_text()
        assert page.evaluate("window.__spoken")[0] == f"Alert: Melanoma, {shown.group(1)} percent."
        raised_at = alert.locator("time").get_attribute("datetime")
        assert raised_at.endswith(("-05:00", "-04:00"))  # New York's offset, winter or summer
        expect(alert).to_contain_text("(America/New_York)")
        expect(page.locator("#live-log thead")).to_contain_text("Time (America/New_York)")
        # "Explain this frame" explains the active alert, not whatever matched best.
        expect(page.locator("#live-explain-button")).to_have_text("Explain this frame (Melanoma alert)")

        page.locator("#live-stop").click()
        expect(page.locator("#live-start")).to_be_enabled()
        frames = page.locator("#live-count").inner_text()
        page.locator("#live-explain-button").click()
        expect(page.locator("#live-explain img")).to_be_visible()
        expect(page.locator("#live-explain")).to_contain_text("Where the model looked for Melanoma")
        assert page.locator("#live-count").inner_text() == frames  # stopped means stopped

        with page.expect_download() as download:
            page.locator("#live-log-csv").click()
        assert download.value.suggested_filename.startswith("privascan-alerts-")
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert rows and rows[0]["condition_id"] == "melanoma" and float(rows[0]["threshold"]) == 0.001
        assert rows[0]["time_zone"] == "America/New_York" and rows[0]["raised_at"] == raised_at
        # The explanation counts the frames the page counted.
        assert f"over the last {shown.group(2)} frame" in rows[0]["explanation"] and rows[0]["frames"] == shown.group(2)
    finally:
        context.close()
    assert problems == []


def test_on_a_phone_the_alert_is_in_view_while_scanning_and_the_table_fits(server, chromium):
    """390x844: the video used to fill the screen, the alerts sat below the fold and the table was cut ("Thresho")."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                   device_scale_factor=2, base_url=server)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto("/live")
        token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
        names = page.locator("#live-thresholds input[type=number]").evaluate_all("fields => fields.map((f) => f.name)")
        assert page.request.post("/live/thresholds", headers={"X-CSRF-Token": token},
                                 form={n: "0.001" if n == "threshold_melanoma" else "1" for n in names}).ok
        page.reload()
        page.locator("#live-start").click()
        expect(page.locator("#live-result .live-alert").first).to_be_visible(timeout=TIMEOUT_MS)
        # Measured inside the page in one step: every frame swaps #live-result, so a handle
        # found a moment earlier can already be detached (bounding_box() is then None).
        top = page.wait_for_function("""() => {
            const alert = document.querySelector("#live-result .live-alert");
            return alert ? {top: alert.getBoundingClientRect().top} : null;
        }""").json_value()["top"]
        assert top < 844, top  # in view without scrolling, while the camera runs
        video = page.locator("#live-video").bounding_box()
        assert video["height"] <= 0.4 * 844, video
        table = page.locator("table.live-scores")
        expect(table).to_be_visible()
        # Measured in one step inside the page: each new frame swaps the table, so element
        # handles taken one by one can point at a table that is already gone.
        measured = page.evaluate("""() => {
            const table = document.querySelector("table.live-scores");
            return {fits: table.scrollWidth <= table.clientWidth + 1,
                    headers: [...table.querySelectorAll("thead th")].map((th) => {
                        const box = th.getBoundingClientRect();
                        return {text: th.innerText, x: box.x, width: box.width, height: box.height,
                                fits: th.scrollWidth <= th.clientWidth + 1,
                                line: parseFloat(getComputedStyle(th).lineHeight) || 20};
                    })};
        }""")
        assert measured["fits"], "the table is wider than its box"
        assert measured["headers"]
        for cell in measured["headers"]:
            assert cell["x"] >= 0 and cell["x"] + cell["width"] <= 390 + 0.5, cell
            assert cell["fits"], cell
            # One line each: a heading broken inside a word ("Thresho / ld") is cut too.
            assert cell["height"] < 2 * cell["line"], cell
        page.locator("#live-stop").click()
    finally:
        context.close()
