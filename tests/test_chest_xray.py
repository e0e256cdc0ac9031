"""The chest X-ray plugin: a second modality through the real app, alone and beside dermatology.

Run with only ``plugins.medsiglip`` and ``plugins.chest_xray`` registered, the
whole flow (upload, analyse, result page, heatmap, JSON API) works: the core
holds nothing dermatology-specific. The tiny random MedSigLIP is loaded
through ``from_pretrained``; the scores are meaningless, the code path is real.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.helpers import Browser, make_app, multipart, photo_bytes
from webapp.config import DEFAULT_PLUGINS

CHEST_ONLY = ("plugins.medsiglip", "plugins.chest_xray")
CHEST_LABELS = ("No acute finding", "Pneumothorax", "Pleural effusion", "Cardiomegaly", "Pulmonary edema",
                "Atelectasis", "Consolidation / pneumonia")
DERMATOLOGY_WORDS = re.compile(r"lesion|skin|melanoma|dermatolog|mole\b|nevus", re.IGNORECASE)


def chest_xray_png(seed: int = 0, width: int = 520, height: int = 600) -> bytes:
    """A greyscale, portrait 'radiograph': bright body, dark lung fields, a heart shadow, ribs, noise."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (width, height), 30)  # air outside the body
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((40, 30, width - 40, height - 10), radius=60, fill=175)  # soft tissue
    for x0 in (80, width // 2 + 20):  # lungs: air is dark on a radiograph
        draw.ellipse((x0, 80, x0 + width // 2 - 100, height - 90), fill=70)
    draw.ellipse((width // 2 - 90, height // 2, width // 2 + 110, height - 110), fill=190)  # heart shadow
    draw.rectangle((width // 2 - 18, 40, width // 2 + 18, height - 60), fill=200)  # spine
    for y in range(110, height - 120, 38):  # ribs
        draw.arc((70, y - 40, width - 70, y + 60), 200, 340, fill=150, width=7)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)
    pixels += rng.normal(0, 6, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def text_of(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def wait_for_worker(app):
    assert app.extensions["privascan_worker"].join_idle(120)


def analyse(app, browser, content: bytes, name: str) -> str:
    """Upload, analyse and return the photo id of the new card."""
    before = set(browser.photo_ids())
    assert browser.upload((content, name)).status_code == 200
    (photo_id,) = set(browser.photo_ids()) - before
    assert browser.post(f"/photos/{photo_id}/analyze").status_code == 200
    wait_for_worker(app)
    return photo_id


@pytest.fixture
def chest_app(tiny_model_dir):
    app = make_app(tiny_model_dir, DEFAULT_PLUGINS=CHEST_ONLY, CLINICAL_APP="chest_xray")
    yield app
    app.extensions["privascan_worker"].stop()


def test_the_plugin_registers_a_whole_image_app_with_its_own_bank_and_template(chest_app):
    registry = chest_app.extensions["privascan_registry"]
    assert set(registry.apps) == {"chest_xray"} and set(registry.banks) == {"chest_xray"}
    assert not registry.detectors  # nothing dermatology-specific was loaded
    record = registry.apps["chest_xray"]
    assert (record.title, record.bank, record.classifier, record.explainer, record.detector) == (
        "Chest X-ray", "chest_xray", "medsiglip", "medsiglip-gradcam", None)
    assert record.result_template == "chest_xray/result.html"
    assert "radiologist" in record.disclaimer
    # The template comes from the plugin package's own templates/ folder, after the repo's.
    source = chest_app.jinja_env.loader.get_source(chest_app.jinja_env, record.result_template)[1]
    assert source.replace("\\", "/").endswith("plugins/chest_xray/templates/chest_xray/result.html")


def test_chest_xray_alone_runs_the_whole_flow(chest_app):
    browser = Browser(chest_app.test_client())
    page = browser.get("/", htmx=False).get_data(as_text=True)
    assert "Model ready" in page
    assert 'name="app"' not in page  # one modality: no picker
    assert "Frontal chest X-ray (PA/AP)" in page

    photo_id = analyse(chest_app, browser, chest_xray_png(1), "chest.png")
    card_response = browser.get(f"/photos/{photo_id}/card")
    card, words = card_response.get_data(as_text=True), text_of(card_response)
    assert "Analysed" in card and "result-chest-xray" in card
    bank = chest_app.extensions["privascan_registry"].banks["chest_xray"]
    assert card.count("<progress") == len(bank.conditions)
    for label in CHEST_LABELS:
        assert label in words
    assert "All findings, most likely first" in words and "Most likely:" in words
    assert re.search(r"Urgent finding suspected|Abnormal finding suspected|No acute finding matched|Unclear", words)
    assert "analyses the whole image (no localizer)" in words
    assert "Kind of picture: Frontal chest X-ray (PA/AP)" in words
    assert "read by a radiologist" in words  # the plugin's disclaimer
    assert "could be located" not in words  # no localizer, so no 'nothing found' warning
    assert not DERMATOLOGY_WORDS.search(words), DERMATOLOGY_WORDS.search(words)

    crop = Image.open(io.BytesIO(browser.get(f"/photos/{photo_id}/crop.jpg").data))
    heatmap = Image.open(io.BytesIO(browser.get(f"/photos/{photo_id}/heatmap.png").data))
    assert crop.size == heatmap.size == (448, 448) and heatmap.format == "PNG"
    assert browser.get(f"/photos/{photo_id}/located.jpg").status_code == 200
    assert re.search(r'/photos/[^/]+/explain/[a-z_]+"', card)  # runner-up heatmap offered

    # Its stylesheet comes from the plugin package's static/ folder.
    css_url = re.search(r'<link rel="stylesheet" href="([^"]+)">', card).group(1)
    assert re.fullmatch(r"/plugins/chest_xray/static/chest_xray\.css\?v=[0-9a-f]{12}", css_url)  # versioned (static_assets.py)
    css = browser.get(css_url, htmx=False)
    assert css.status_code == 200 and css.mimetype == "text/css" and b".urgent-callout" in css.data
    assert css.headers.get("Cache-Control") != "no-store"  # a static file, like the core's: no user data
    assert "default-src 'self'" in css.headers["Content-Security-Policy"]

    page = text_of(browser.get("/", htmx=False))
    assert not DERMATOLOGY_WORDS.search(page), DERMATOLOGY_WORDS.search(page)


def test_the_stored_result_is_the_whole_image_scored_against_the_chest_bank(chest_app):
    browser = Browser(chest_app.test_client())
    photo_id = analyse(chest_app, browser, chest_xray_png(2, width=400, height=600), "portrait.png")
    with browser.client.session_transaction() as cookie_session:
        store_id = cookie_session["store_id"]
    result = chest_app.extensions["privascan_store"].get_photo(store_id, photo_id).result
    assert result.app_name == "chest_xray" and result.detection is None
    assert result.crop_region.as_list() == [-100, 0, 500, 600]  # the whole image, centred in a padded square
    bank = chest_app.extensions["privascan_registry"].banks["chest_xray"]
    assert result.scores.condition_ids == [c.id for c in bank.conditions]


def test_urgent_findings_are_called_out(chest_app):
    browser = Browser(chest_app.test_client())
    photo_id = analyse(chest_app, browser, chest_xray_png(3), "urgent.png")
    bank = chest_app.extensions["privascan_registry"].banks["chest_xray"]
    urgent = [c for c in bank.conditions if "urgent" in c.groups]
    assert {c.id for c in urgent} == {"pneumothorax", "pulmonary_edema"}
    # Thresholds of 1: nothing can reach them, so no call-out.
    browser.post("/settings?debug=1", data={f"threshold_{c.id}": "1" for c in bank.conditions})
    assert "Possible urgent finding" not in text_of(browser.get(f"/photos/{photo_id}/card"))
    # Urgent thresholds of 0: every urgent finding is called out, with its score and threshold.
    browser.post("/settings?debug=1", data={f"threshold_{c.id}": "0" for c in urgent})
    words = text_of(browser.get(f"/photos/{photo_id}/card"))
    assert "Possible urgent findings:" in words
    callout = words.split("Possible urgent findings:", 1)[1].split("do not wait for a routine report", 1)[0]
    assert "Pneumothorax" in callout and "Pulmonary edema" in callout and "(alert threshold 0 %)" in callout
    assert "Cardiomegaly" not in callout  # abnormal, not urgent


def test_the_json_api_uses_the_chest_bank(chest_app):
    client = chest_app.test_client()
    response = client.post("/api/analyze?explain=1", **multipart([("image", (chest_xray_png(4), "chest.png"))]))
    assert response.status_code == 200
    body = response.get_json()
    bank = chest_app.extensions["privascan_registry"].banks["chest_xray"]
    assert body["app"] == "chest_xray" and body["template_set"] == "frontal"
    assert {c["id"] for c in body["conditions"]} == {c.id for c in bank.conditions}
    assert abs(sum(c["probability"] for c in body["conditions"]) - 1) < 1e-3
    assert body["lesion_box"] is None and body["localizer"] is None and body["notes"] == []
    assert "localize" not in body["timings"] and "classify_and_explain" in body["timings"]
    header, data = body["heatmap"].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (448, 448)
    assert body["heatmap_condition"] == body["headline"]["id"]
    # Dermatology is not registered here: asking for it is a clear 400, not a silent substitute.
    other = client.post("/api/analyze?app=dermatology", **multipart([("image", (chest_xray_png(4), "chest.png"))]))
    assert other.status_code == 400 and "this server has: chest_xray" in other.get_json()["error"]


def test_plugin_static_files_refuse_unknown_plugins_and_escapes(chest_app):
    client = chest_app.test_client()
    assert client.get("/plugins/nope/static/chest_xray.css").status_code == 404
    assert client.get("/plugins/chest_xray/static/missing.css").status_code == 404
    for escape in ("../__init__.py", "..%2F__init__.py", "%2E%2E/__init__.py"):
        response = client.get(f"/plugins/chest_xray/static/{escape}")
        assert response.status_code == 404, escape
        assert b"hookimpl" not in response.data


# -- both modalities ---------------------------------------------------------------
@pytest.fixture
def both_app(tiny_model_dir):
    app = make_app(tiny_model_dir, DEFAULT_PLUGINS=DEFAULT_PLUGINS)
    yield app
    app.extensions["privascan_worker"].stop()


def test_chest_xray_is_a_default_plugin():
    assert "plugins.chest_xray" in DEFAULT_PLUGINS and "plugins.dermatology" in DEFAULT_PLUGINS


def test_the_picker_lists_both_and_switching_modality_switches_the_whole_flow(both_app):
    browser = Browser(both_app.test_client())
    page = browser.get("/", htmx=False).get_data(as_text=True)
    picker = re.search(r'<select name="app"[^>]*>(.*?)</select>', page, re.DOTALL).group(1)
    options = re.findall(r'<option value="([^"]+)"( selected)?>([^<]+)</option>', picker)
    assert [(value, label) for value, _, label in options] == [("dermatology", "Skin (dermatology)"), ("chest_xray", "Chest X-ray")]
    assert [value for value, selected, _ in options if selected] == ["dermatology"]
    assert "Dermoscopy" in page and "Frontal chest X-ray" not in page

    # As the page's form sends it: the new modality and the old one's kind of picture.
    switched = browser.post("/settings", data={"app": "chest_xray", "template_set": "clinical"})
    html = switched.get_data(as_text=True)
    assert switched.status_code == 200
    assert '<option value="chest_xray" selected>' in html
    assert "Frontal chest X-ray (PA/AP)" in html and "Dermoscopy" not in html  # the bank's picture kinds
    debug = browser.get("/?debug=1", htmx=False).get_data(as_text=True)
    assert 'name="threshold_pneumothorax"' in debug and 'name="threshold_melanoma"' not in debug

    chest_id = analyse(both_app, browser, chest_xray_png(5), "chest.png")
    chest_card = text_of(browser.get(f"/photos/{chest_id}/card"))
    assert "Pneumothorax" in chest_card and "Melanoma" not in chest_card
    assert "All findings, most likely first" in chest_card

    assert browser.post("/settings", data={"template_set": "clinical"}).status_code == 400  # not a chest X-ray kind
    browser.post("/settings", data={"app": "dermatology", "template_set": "frontal"})
    assert '<option value="clinical" selected>' in browser.get("/").get_data(as_text=True)
    skin_id = analyse(both_app, browser, photo_bytes(7), "skin.jpg")
    skin_card = browser.get(f"/photos/{skin_id}/card").get_data(as_text=True)
    assert "Melanoma" in skin_card and "Pneumothorax" not in skin_card
    assert "All conditions, most likely first" in skin_card and "result-chest-xray" not in skin_card
    # The chest result keeps its own bank and template after the session switched back.
    chest_card = browser.get(f"/photos/{chest_id}/card").get_data(as_text=True)
    assert "result-chest-xray" in chest_card and "Pneumothorax" in chest_card

    # A modality that is not registered is refused in words.
    refused = browser.post("/settings", data={"app": "ophthalmology"})
    assert refused.status_code == 400 and "That modality is not available." in text_of(refused)


def test_the_api_picks_the_modality_per_request(both_app):
    client = both_app.test_client()
    chest = client.post("/api/analyze?app=chest_xray", **multipart([("image", (chest_xray_png(6), "c.png"))])).get_json()
    skin = client.post("/api/analyze", **multipart([("image", (photo_bytes(8), "s.jpg"))])).get_json()
    assert chest["app"] == "chest_xray" and "pneumothorax" in {c["id"] for c in chest["conditions"]}
    assert skin["app"] == "dermatology" and "melanoma" in {c["id"] for c in skin["conditions"]}


def test_the_api_refuses_an_unknown_modality_or_picture_kind(both_app):
    client = both_app.test_client()
    image = [("image", (chest_xray_png(7), "c.png"))]
    unknown_app = client.post("/api/analyze?app=ophthalmology", **multipart(image))
    assert unknown_app.status_code == 400
    assert unknown_app.get_json()["error"] == "Unknown app 'ophthalmology'; this server has: dermatology, chest_xray."
    wrong_kind = client.post("/api/analyze?app=chest_xray&template_set=dermoscopy", **multipart(image))
    assert wrong_kind.status_code == 400
    assert wrong_kind.get_json()["error"] == "Unknown template_set 'dermoscopy' for chest_xray; use one of: frontal."
