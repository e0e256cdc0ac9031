"""Every route through the real Flask client, as HTMX partial and as full page.

The app loads the tiny random MedSigLIP and the real dermatology plugin, so
an analysis here runs the real localizer, crop, classifier and Grad-CAM.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.helpers import NCI_PHOTO, Browser, jpeg_bytes, photo_bytes


def cards(html: str) -> list[str]:
    return re.findall(r'<article id="photo-([^"]+)"', html)


def message_text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


# -- the page -------------------------------------------------------------------
def test_index_full_page_and_partial_status(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<!doctype html>" in html
    assert 'id="photo-input"' in html and 'multiple' in html
    assert "Model ready" in html
    assert "/static/vendor/htmx.min.js" in html
    status = client.get("/status", headers={"HX-Request": "true"})
    assert status.status_code == 200
    body = status.get_data(as_text=True)
    assert "<!doctype html>" not in body
    assert 'id="model-status"' in body
    assert 'hx-swap-oob="true"' in body  # the settled status refreshes the timeline's buttons
    # A poll from a page that already saw "ready" gets the status line only.
    again = client.get("/status?seen=ready", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="model-status"' in again and 'id="timeline"' not in again


def test_status_without_htmx_is_the_whole_page(client):
    assert "<!doctype html>" in client.get("/status").get_data(as_text=True)


def test_no_third_party_reference_in_the_page(client):
    html = client.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    css = client.get("/static/app.css").get_data(as_text=True)
    assert "url(" not in css and "@import" not in css


# -- intake ---------------------------------------------------------------------
def test_upload_several_photos_as_htmx_partial(browser):
    response = browser.upload((photo_bytes(1), "one.jpg"), (photo_bytes(2, "PNG"), "two.png"), last_modified="1700000000000,")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.startswith('<section id="timeline"')
    assert len(cards(html)) == 2
    assert "Added 2 photos" in html
    assert "one.jpg" in html and "two.png" in html
    # one.jpg has no EXIF date: its file date groups it; two.png falls back to today.
    assert "2023-11-14" in html and "(file date)" in html and "(upload day)" in html


def test_upload_full_page_form_without_javascript(browser):
    response = browser.upload((photo_bytes(3), "plain-form.jpg"), htmx=False)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<!doctype html>" in html and "plain-form.jpg" in html


def test_exif_capture_date_wins_over_file_date(browser):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2021:06:30 09:00:00"
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), (190, 140, 120)).save(buffer, format="JPEG", exif=exif.tobytes())
    html = browser.upload((buffer.getvalue(), "dated.jpg"), last_modified="1700000000000").get_data(as_text=True)
    assert 'datetime="2021-06-30"' in html and "(photo metadata)" in html


def test_duplicates_are_skipped_with_a_message(browser):
    data = photo_bytes(4)
    browser.upload((data, "a.jpg"))
    response = browser.upload((data, "again.jpg"))
    assert response.status_code == 200
    assert "already in this session" in message_text(response)
    assert len(browser.photo_ids()) == 1


def test_filenames_are_escaped_never_markup(browser):
    html = browser.upload((photo_bytes(5), '<img src=x onerror=alert(1)>.jpg')).get_data(as_text=True)
    assert "<img src=x onerror" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html


@pytest.mark.parametrize(
    "content, name, status, words",
    [
        (b"just some text", "notes.jpg", 415, "not a photo"),
        (jpeg_bytes(400, 300)[:300], "cut.jpg", 400, "damaged"),
        (b"", "empty.jpg", 400, "empty"),
        (b"GIF89a" + bytes(64), "anim.gif", 415, "not a photo"),
    ],
)
def test_bad_files_get_a_message_and_a_4xx_and_keep_the_session(browser, content, name, status, words):
    browser.upload((photo_bytes(6), "keep.jpg"))
    response = browser.upload((content, name))
    assert response.status_code == status
    text = message_text(response)
    assert words in text and name in text
    assert "Traceback" not in text
    assert "keep.jpg" in text  # the swapped-in timeline still shows the session's photo
    assert len(browser.photo_ids()) == 1  # the rest of the session is untouched


def test_pixel_bomb_is_refused(browser):
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")
    response = browser.upload((buffer.getvalue(), "bomb.png"))
    assert response.status_code == 413
    assert "pixels" in message_text(response)


def test_file_over_the_size_limit(app_factory):
    app = app_factory(MAX_FILE_BYTES=50_000)
    browser = Browser(app.test_client())
    response = browser.upload((photo_bytes(7, quality=100) + bytes(60_000), "huge.jpg"))
    assert response.status_code == 413
    assert "larger than" in message_text(response)


def test_request_over_the_body_limit_is_refused_before_reading(app_factory):
    app = app_factory(MAX_CONTENT_LENGTH=100_000)
    browser = Browser(app.test_client())
    response = browser.upload((bytes(200_000), "big.jpg"))
    assert response.status_code == 413
    assert "larger than" in message_text(response)


def test_photo_cap_per_session(app_factory):
    app = app_factory(MAX_PHOTOS_PER_SESSION=2)
    browser = Browser(app.test_client())
    response = browser.upload(*[(photo_bytes(10 + i), f"p{i}.jpg") for i in range(3)])
    assert response.status_code == 200  # two were added
    assert "2 photos, the most allowed" in message_text(response)
    assert len(browser.photo_ids()) == 2
    assert browser.upload((photo_bytes(20), "more.jpg")).status_code == 413


def test_no_file_at_all(browser):
    response = browser.post("/photos", data={}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "No photo was received" in message_text(response)
    assert response.headers["HX-Retarget"] == "#messages"  # the message replaces nothing else


# -- timeline -------------------------------------------------------------------
def test_date_edit_regroups_and_bad_dates_are_refused(browser):
    browser.upload((photo_bytes(30), "a.jpg"), (photo_bytes(31), "b.jpg"), last_modified="1700000000000,1700000000000")
    photo_id = browser.photo_ids()[0]
    response = browser.post(f"/photos/{photo_id}/date", data={"taken_on": "2022-02-02"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.count('class="day"') == 2 and 'datetime="2022-02-02"' in html
    assert browser.post(f"/photos/{photo_id}/date", data={"taken_on": "yesterday"}).status_code == 400
    assert browser.post(f"/photos/{photo_id}/date", data={"taken_on": "2999-01-01"}).status_code == 400


def test_delete_one_photo_and_clear_the_session(app, browser):
    browser.upload((photo_bytes(40), "a.jpg"), (photo_bytes(41), "b.jpg"))
    first, second = browser.photo_ids()
    response = browser.post(f"/photos/{first}/delete")
    # Its card is gone; only the Undo beside the message still names it.
    assert response.status_code == 200 and f'id="photo-{first}"' not in response.get_data(as_text=True)
    assert browser.get(f"/photos/{first}/thumbnail.jpg").status_code == 404
    store = app.extensions["privascan_store"]
    assert len(store) == 1
    response = browser.post("/session/clear")
    assert "deleted from the server" in message_text(response)
    assert len(store) == 0  # deleted on the server at once
    assert browser.get(f"/photos/{second}/thumbnail.jpg").status_code == 404
    assert browser.photo_ids() == []


def test_pictures_are_served_from_memory_and_never_cached(browser):
    browser.upload((photo_bytes(50), "a.jpg"))
    photo_id = browser.photo_ids()[0]
    for path in ("thumbnail.jpg", "photo.jpg"):
        response = browser.get(f"/photos/{photo_id}/{path}")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        assert Image.open(io.BytesIO(response.data)).format == "JPEG"
    assert browser.get(f"/photos/{photo_id}/crop.jpg").status_code == 404  # not analysed yet


# -- analysis -------------------------------------------------------------------
def wait_for_worker(app):
    assert app.extensions["privascan_worker"].join_idle(120)


def test_analyse_one_photo_polls_then_shows_the_result(app, browser):
    import threading

    from webapp.worker import Job

    browser.upload((NCI_PHOTO.read_bytes(), "melanoma.jpg"))
    photo_id = browser.photo_ids()[0]
    # Hold the worker with another job, so the photo is certainly still queued when its card comes back.
    gate = threading.Event()
    app.extensions["privascan_worker"].submit(Job("hold", lambda: gate.wait(60)))
    try:
        queued = browser.post(f"/photos/{photo_id}/analyze")
        html = queued.get_data(as_text=True)
        assert queued.status_code == 200
        assert "Queued" in html
        assert 'hx-trigger="every 1s"' in html  # the card polls itself
    finally:
        gate.set()
    wait_for_worker(app)
    card = browser.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    assert "Analysed" in card and 'hx-trigger="every 1s"' not in card  # polling stopped
    assert 'class="ranking"' in card and card.count("<progress") >= 15
    assert "Most likely:" in card and "confidence:" in card
    assert re.search(r"(High|Moderate|Low) concern|Unclear", card)
    for path, fmt in (("crop.jpg", "JPEG"), ("heatmap.png", "PNG"), ("located.jpg", "JPEG")):
        response = browser.get(f"/photos/{photo_id}/{path}")
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.data))
        assert image.format == fmt
    assert Image.open(io.BytesIO(browser.get(f"/photos/{photo_id}/crop.jpg").data)).size == (448, 448)
    assert "Box found by classical" in card


def test_runner_up_heatmap_on_request(app, browser):
    browser.upload((photo_bytes(60), "a.jpg"))
    photo_id = browser.photo_ids()[0]
    browser.post(f"/photos/{photo_id}/analyze")
    wait_for_worker(app)
    card = browser.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    runner_up = re.search(r'/photos/[^/]+/explain/([a-z_]+)"', card).group(1)
    response = browser.post(f"/photos/{photo_id}/explain/{runner_up}")
    assert response.status_code == 200
    wait_for_worker(app)
    heatmap = browser.get(f"/photos/{photo_id}/heatmap/{runner_up}.png")
    assert heatmap.status_code == 200 and Image.open(io.BytesIO(heatmap.data)).size == (448, 448)
    assert heatmap.data != browser.get(f"/photos/{photo_id}/heatmap.png").data
    assert browser.post(f"/photos/{photo_id}/explain/not_a_condition").status_code == 404


def test_analyse_all(app, browser):
    browser.upload((photo_bytes(70), "a.jpg"), (photo_bytes(71), "b.jpg"))
    response = browser.post("/analyze-all")
    assert "Queued 2 photos" in message_text(response)
    wait_for_worker(app)
    html = browser.get("/", htmx=False).get_data(as_text=True)
    assert html.count("Analysed") == 2
    assert "no photo waiting" in message_text(browser.post("/analyze-all"))


def test_a_tiny_photo_gets_a_plain_answer_not_a_label(app, browser):
    browser.upload((jpeg_bytes(40, 30), "tiny.jpg"))
    photo_id = browser.photo_ids()[0]
    browser.post(f"/photos/{photo_id}/analyze")
    wait_for_worker(app)
    card = browser.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    assert "Most likely" not in card  # no label for a photo that was not analysed
    assert "only 40x30 pixels" in card


def test_a_photo_without_a_lesion_says_so_and_is_not_confident(app, browser):
    from tests.synthetic import make_plain_skin

    buffer = io.BytesIO()
    make_plain_skin(5, 800, 600).save(buffer, format="JPEG", quality=92)
    browser.upload((buffer.getvalue(), "plain-skin.jpg"))
    photo_id = browser.photo_ids()[0]
    browser.post(f"/photos/{photo_id}/analyze")
    wait_for_worker(app)
    card = message_text(browser.get(f"/photos/{photo_id}/card"))
    assert "No lesion could be located" in card
    assert "confidence: unclear" in card
    assert "No advice is shown" in card  # an unclear result never shows a condition's summary


def test_a_featureless_picture_is_cant_assess_with_a_hint_and_analyse_anyway(app, browser):
    browser.upload((jpeg_bytes(400, 300, (205, 160, 135)), "flat.jpg"))
    photo_id = browser.photo_ids()[0]
    browser.post(f"/photos/{photo_id}/analyze")
    wait_for_worker(app)
    response = browser.get(f"/photos/{photo_id}/card")
    assert response.status_code == 200
    card = message_text(response)
    assert "Can't assess" in card and "Too blurred" in card and "Analyse anyway" in card
    assert "Most likely" not in card  # no condition, no advice
    again = browser.post(f"/photos/{photo_id}/analyze", data={"analyse_anyway": "1"})
    assert again.status_code == 200
    wait_for_worker(app)
    card = message_text(browser.get(f"/photos/{photo_id}/card"))
    assert "Low quality: analysed anyway" in card and "Most likely" in card and "No advice is shown" in card


def test_queue_full_answers_busy_with_retry_after(app_factory):
    app = app_factory(QUEUE_SIZE=1)
    browser = Browser(app.test_client())
    browser.upload(*[(photo_bytes(80 + i), f"p{i}.jpg") for i in range(4)])
    app.extensions["privascan_worker"].stop()  # nothing drains the queue now
    ids = browser.photo_ids()
    assert browser.post(f"/photos/{ids[0]}/analyze").status_code == 200
    busy = browser.post(f"/photos/{ids[1]}/analyze")
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "30"
    assert "busy" in message_text(busy)


def test_analyse_is_refused_while_no_model_is_available(app_factory, tmp_path):
    app = app_factory(MODEL=str(tmp_path / "nowhere"))
    browser = Browser(app.test_client())
    page = browser.get("/", htmx=False).get_data(as_text=True)
    assert "Model unavailable" in page
    browser.upload((photo_bytes(90), "a.jpg"))
    html = browser.get("/", htmx=False).get_data(as_text=True)
    assert re.search(r"<button[^>]*hx-post=\"/photos/[^\"]+/analyze\"[^>]*\s+disabled", html)
    response = browser.post(f"/photos/{browser.photo_ids()[0]}/analyze")
    assert response.status_code == 409
    assert "not available yet" in message_text(response)


# -- settings -------------------------------------------------------------------
def test_settings_switch_template_set_and_debug_rules(app, browser):
    response = browser.post("/settings", data={"template_set": "dermoscopy"})
    assert response.status_code == 200
    assert re.search(r'<option value="dermoscopy" selected>', response.get_data(as_text=True))
    assert browser.post("/settings", data={"template_set": "x-ray"}).status_code == 400
    assert browser.post("/settings?debug=1", data={"unclear_margin": "2"}).status_code == 400
    assert browser.post("/settings?debug=1", data={"threshold_melanoma": "abc"}).status_code == 400
    page = browser.get("/?debug=1", htmx=False).get_data(as_text=True)
    assert "Calibration (debug)" in page


def test_debug_rules_apply_to_stored_scores_without_rerunning(app, browser):
    browser.upload((photo_bytes(100), "a.jpg"))
    photo_id = browser.photo_ids()[0]
    browser.post(f"/photos/{photo_id}/analyze")
    wait_for_worker(app)
    # Count vision passes where every analysis makes one: the classifier's embedding of a crop
    # and the explainer's combined pass (a full analysis uses the latter).
    calls = []
    registry = app.extensions["privascan_registry"]
    classifier, explainer = registry.classifiers["medsiglip"], registry.explainers["medsiglip-gradcam"]
    embed, explain = classifier.embed_crops, explainer.explain
    classifier.embed_crops = lambda *a, **k: calls.append("embed") or embed(*a, **k)
    explainer.explain = lambda *a, **k: calls.append("explain") or explain(*a, **k)
    try:
        # The spy sees a real analysis: it counts what a re-run would cost.
        browser.post(f"/photos/{photo_id}/analyze")
        wait_for_worker(app)
        assert calls, "the spies saw no vision pass, so they could not catch a re-run"
        calls.clear()
        browser.post("/settings?debug=1", data={"entropy_limit_bits": "0"})
        card = message_text(browser.get(f"/photos/{photo_id}/card"))
        assert "Low reliability" in card  # every ranking is above 0 bits
        browser.post("/settings?debug=1", data={"entropy_limit_bits": "10"})
        assert "Low reliability" not in message_text(browser.get(f"/photos/{photo_id}/card"))
        assert calls == []  # the debug rules re-read the stored scores: no vision pass
    finally:
        classifier.embed_crops, explainer.explain = embed, explain


# -- sessions, isolation, CSRF ---------------------------------------------------
def test_another_browser_cannot_see_or_touch_my_photos(app, browser):
    browser.upload((photo_bytes(110), "mine.jpg"))
    photo_id = browser.photo_ids()[0]
    intruder = Browser(app.test_client())
    for path in ("thumbnail.jpg", "photo.jpg", "card", "crop.jpg", "heatmap.png"):
        assert intruder.get(f"/photos/{photo_id}/{path}").status_code == 404
    for path in ("delete", "analyze", "date"):
        assert intruder.post(f"/photos/{photo_id}/{path}", data={"taken_on": "2020-01-01"}).status_code == 404
    assert "mine.jpg" not in intruder.get("/", htmx=False).get_data(as_text=True)
    assert browser.photo_ids() == [photo_id]


def test_state_changes_need_the_csrf_token(browser):
    response = browser.client.post("/photos", data={"photos": (io.BytesIO(photo_bytes(120)), "a.jpg")},
                                   content_type="multipart/form-data", headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert "out of date" in message_text(response)
    assert browser.photo_ids() == []


def test_expired_session_cookie_starts_fresh_with_a_message(app, browser):
    browser.upload((photo_bytes(130), "a.jpg"))
    photo_id = browser.photo_ids()[0]
    store = app.extensions["privascan_store"]
    (data,) = list(store._sessions.values())
    data.last_seen -= app.config["SESSION_IDLE_MINUTES"] * 60 + 1  # idle past the timeout
    page = browser.get("/", htmx=False).get_data(as_text=True)
    assert "previous session ended" in page
    assert photo_id not in page
    assert len(store) == 0
    assert browser.get(f"/photos/{photo_id}/thumbnail.jpg").status_code == 404


def test_a_cookie_the_server_does_not_know_gets_a_fresh_session(client):
    client.set_cookie("privascan_session", "forged-or-from-before-a-restart")
    page = client.get("/")
    assert page.status_code == 200
    assert "previous session ended" in page.get_data(as_text=True)


def test_unknown_photo_and_unknown_page(browser):
    assert browser.get("/photos/nope/card").status_code == 404
    response = browser.get("/no-such-page", htmx=False)
    assert response.status_code == 404
    assert "does not exist" in message_text(response)


def test_security_headers(client):
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_session_cookie_is_secure_outside_tests(app_factory):
    app = app_factory(SESSION_COOKIE_SECURE=True)
    cookie = app.test_client().get("/").headers["Set-Cookie"]
    assert "Secure" in cookie
