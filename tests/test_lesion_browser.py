"""Issue 15 in a real browser: group three photos as one lesion (one by the similarity suggestion),
open the comparison, print the lesion report to PDF and as a print-media PNG, download the FHIR bundle.

Debian's Chromium driven by Playwright, the real app (tiny random MedSigLIP) on a loopback port.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import CHROMIUM

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed; `make test` installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

from tests.helpers import CHROMIUM_ARGS, make_app, serving  # noqa: E402
from tests.synthetic import make_lesion_photo  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def photo_file(seed: int) -> dict:
    image, _ = make_lesion_photo(seed, width=800, height=600)  # large enough to pass the quality gate
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return {"name": f"mole-{seed}.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}


def test_group_compare_print_and_export(tiny_model_dir, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    # Random weights make every crop look alike or unlike at random; -1 lets the suggestion
    # always offer the best match, so the test exercises the confirm flow deterministically.
    app = make_app(tiny_model_dir, SAME_LESION_SIMILARITY=-1.0)
    with serving(app, "lesion-browser-server") as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url, accept_downloads=True)
        context.set_default_timeout(60_000)
        page = context.new_page()
        foreign = []
        page.on("request", lambda request: foreign.append(request.url) if not request.url.startswith(url) else None)
        page.goto("/")
        # Two photos first, so the second one's only candidate is the lesion the first starts;
        # the third comes later (the way a follow-up photo does).
        page.set_input_files("#photo-input", [photo_file(seed) for seed in (1, 2)])
        expect(page.locator("article.card")).to_have_count(2)
        page.get_by_role("button", name="Analyze all").click()
        expect(page.locator("article.card.state-done")).to_have_count(2, timeout=240_000)
        states = page.locator("article.card .state").all_inner_texts()
        assert all("Analysed" in state for state in states), states  # every photo passed the quality gate
        cards = page.locator("article.card")
        first = cards.nth(0)
        # 1. A new lesion from the first card, with the keyboard: open the form, type, pick a site, submit.
        first.locator("summary", has_text="Group as a lesion").focus()
        page.keyboard.press("Enter")
        first.get_by_label("Name (for a new one)").fill("Left shoulder mole")
        first.locator("select[name=site]").select_option("shoulder")
        first.get_by_role("button", name="Group").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#messages")).to_contain_text("Started the lesion")
        # 2. The second card suggests that lesion; confirm it.
        second = page.locator("article.card").nth(1)
        expect(second.locator(".suggestion")).to_contain_text("Same lesion as")
        second.get_by_role("button", name="Yes, same lesion").click()
        expect(page.locator("#messages")).to_contain_text("Grouped as")
        page.set_input_files("#photo-input", [photo_file(3)])
        expect(page.locator("article.card")).to_have_count(3)
        page.get_by_role("button", name="Analyze all").click()
        expect(page.locator("article.card.state-done")).to_have_count(3, timeout=240_000)
        # 3. The third joins by choosing the lesion in its form.
        # With the threshold at -1 the third card is offered the lesion too; decline, then join by choosing it.
        third = page.locator("article.card", has_text="mole-3.jpg")
        expect(third.locator(".suggestion")).to_contain_text("Same lesion as")
        third.get_by_role("button", name="No, a different one").click()
        expect(page.locator("#messages")).to_contain_text("not the same lesion")
        third = page.locator("article.card", has_text="mole-3.jpg")
        third.locator("summary", has_text="Group as a lesion").click()
        third.locator("select[name=lesion]").select_option(label="Left shoulder mole (Shoulder)")
        third.get_by_role("button", name="Group").click()
        expect(page.locator(".lesion-name")).to_have_count(3)
        expect(page.locator(".session-summary")).to_contain_text("Summary of this session")

        # The comparison: three columns in date order, two change blocks.
        page.locator(".lesion-name a").first.click()
        expect(page.locator(".comparison-column")).to_have_count(3)
        expect(page.locator(".change")).to_have_count(2)
        expect(page.locator(".size-note")).to_contain_text("Sizes are relative")

        # The printable lesion report: PDF from Chromium, and the print rendering as PNG.
        page.get_by_role("link", name="Printable lesion report").click()
        expect(page.locator(".report-photo")).to_have_count(3)
        page.wait_for_function("Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")
        pdf = page.pdf(format="A4", print_background=True)
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        assert pdf.count(b"/Subtype /Image") + pdf.count(b"/Subtype/Image") >= 3  # photo, crop, heatmap are in it
        page.emulate_media(media="print")
        expect(page.locator("#print-report")).to_be_hidden()
        png = page.screenshot(full_page=True)
        (tmp_path / "lesion-report.png").write_bytes(png)  # pytest's tmp dir: a test artefact, not the app's
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        assert image.shape[0] > 900
        # Not blank, and it holds the pictures: skin-coloured photo and crop pixels (red over blue)
        # and the heatmap's blue-dominated overlay, not text alone.
        assert (image.min(axis=2) < 200).mean() > 0.05
        assert ((image[..., 0] - image[..., 2] > 25) & (image.min(axis=2) > 60)).mean() > 0.01  # skin
        assert ((image[..., 2] - image[..., 0] > 25)).mean() > 0.005  # heatmap blues
        for text in ("Lesion: Left shoulder mole", "SNOMED CT 16982005", "Model:", "Prompt bank:", "not a diagnosis"):
            assert text in page.content(), text
        page.emulate_media(media="screen")

        # The FHIR bundle, downloaded as a person would.
        page.goto("/")
        with page.expect_download() as download_info:
            page.locator(".session-summary").get_by_role("link", name="FHIR bundle").click()
        bundle = json.loads(download_info.value.path().read_bytes())
        Bundle.model_validate(bundle)
        kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
        assert kinds.count("DiagnosticReport") == 3 and "Provenance" in kinds and kinds.count("Device") == 2
        browser.close()
    assert foreign == []
