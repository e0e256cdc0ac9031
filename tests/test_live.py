"""Live scan: smoothing and hysteresis with scripted scores, then every route with the real tiny model.

The unit tests drive ``webapp.live`` with score sequences written out frame by
frame. The Flask tests post real JPEG frames through the real view, worker,
localizer and tiny MedSigLIP (loaded with ``from_pretrained``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import threading
import time

import pytest
from PIL import Image, ImageFilter
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from tests.helpers import REPO, Browser
from tests.plugins import gate_plugin
from tests.synthetic import make_lesion_photo
from webapp.interfaces import Condition, PromptBank, TemplateSet
from webapp.live import (
    LOG_FIELDS,
    AlertTracker,
    LiveState,
    Smoothing,
    effective_thresholds,
    log_csv,
    log_json,
)
from webapp.prompt_bank import load_prompt_bank

T = 0.30  # the threshold of the scripted sequences
NOON = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def run(scores: list[float], threshold: float = T, smoothing: Smoothing | None = None) -> list[str]:
    """Feed one condition's scores frame by frame; returns its state after each: "raise", "on", "clear" or "off"."""
    tracker = AlertTracker(smoothing or Smoothing(window=5, needed=3, gap=0.05))
    states = []
    for score in scores:
        raised, cleared = tracker.update({"c": score}, {"c": threshold})
        states.append("raise" if raised else "clear" if cleared else "on" if tracker.active() else "off")
    return states


# -- smoothing and hysteresis ------------------------------------------------------
def test_one_noisy_frame_does_not_alert_even_a_perfect_score():
    assert run([0.05, 0.05, 1.0, 0.05, 0.05, 0.05]) == ["off"] * 6
    # and not with a very eager threshold either: one frame is one frame
    assert "raise" not in run([0.0, 0.0, 1.0, 0.0, 0.0], threshold=0.01)


def test_two_noisy_frames_in_a_window_do_not_alert():
    assert "raise" not in run([0.05, 0.9, 0.05, 0.9, 0.05, 0.05, 0.9, 0.05])


def test_sustained_scores_raise_one_alert_on_the_third_frame():
    assert run([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) == ["off", "off", "raise", "on", "on", "on"]


def test_three_of_five_with_one_miss_still_raises():
    assert run([0.6, 0.05, 0.6, 0.6]) == ["off", "off", "off", "raise"]


def test_reaching_the_threshold_in_enough_frames_but_not_on_average_does_not_raise():
    # 3 of 5 frames just reach 0.30 but two zeros pull the average to 0.18.
    assert "raise" not in run([0.0, 0.3, 0.0, 0.3, 0.3])


def test_a_dip_slightly_below_the_threshold_keeps_the_alert():
    states = run([0.4] * 3 + [0.27] * 10)  # clear level is 0.30 - 0.05 = 0.25
    assert states[2] == "raise"
    assert states[3:] == ["on"] * 10


def test_falling_below_the_gap_clears_and_a_new_rise_raises_again():
    states = run([0.4] * 3 + [0.1] * 4 + [0.5] * 4)
    assert states[:3] == ["off", "off", "raise"]
    # averages of the window: 0.34, 0.28, 0.22 -> cleared on the third low frame
    assert states[3:7] == ["on", "on", "clear", "off"]
    assert states[7:].count("raise") == 1


def test_scores_hovering_at_the_threshold_do_not_flicker():
    wobble = [0.32, 0.28, 0.31, 0.27, 0.33, 0.28, 0.30, 0.26, 0.32] * 3
    states = run([0.4] * 3 + wobble)
    assert states.count("raise") == 1 and states.count("clear") == 0


def test_a_very_low_threshold_still_has_a_level_at_which_it_clears():
    smoothing = Smoothing(window=5, needed=3, gap=0.05)
    assert smoothing.clear_level(0.3) == pytest.approx(0.25)
    assert smoothing.clear_level(0.02) == pytest.approx(0.01)  # the gap is capped at half the threshold
    states = run([0.05] * 3 + [0.0] * 5, threshold=0.02)
    assert states[2] == "raise" and "clear" in states


def test_nothing_in_view_counts_against_every_condition():
    tracker = AlertTracker(Smoothing())
    thresholds = {"a": 0.3, "b": 0.3}
    for _ in range(3):
        tracker.update({"a": 0.6, "b": 0.6}, thresholds)
    assert sorted(tracker.active()) == ["a", "b"]
    cleared: list[str] = []
    for _ in range(5):
        cleared += tracker.update(None, thresholds)[1]
    assert sorted(cleared) == ["a", "b"] and tracker.active() == []


def test_smoothing_settings_are_checked():
    with pytest.raises(ValueError):
        Smoothing(window=3, needed=4)
    with pytest.raises(ValueError):
        Smoothing(gap=-0.1)


# -- thresholds, alert records and the log ---------------------------------------
def small_bank() -> PromptBank:
    return PromptBank(
        name="tiny",
        title="Tiny",
        conditions=(
            Condition("mel", "Melanoma", ("malignant",), ("a melanoma",), "93655004", "C43.9",
                      "A serious skin cancer. See a doctor within two weeks.", 0.3),
            Condition("nevus", "Mole", ("benign",), ("a mole",), "400096001", "D22.9", "A common mole.", 0.9),
        ),
        template_sets=(TemplateSet("clinical", "Clinical photo", ("a photo of {}.",)),),
    )


def test_thresholds_come_from_the_bank_unless_the_session_overrides_them(bank):
    assert effective_thresholds(small_bank()) == {"mel": 0.3, "nevus": 0.9}
    assert effective_thresholds(small_bank(), {"nevus": 0.5, "unknown": 0.1}) == {"mel": 0.3, "nevus": 0.5}
    dermatology = effective_thresholds(bank)
    assert dermatology["melanoma"] == bank.condition("melanoma").alert_threshold
    assert set(dermatology) == {c.id for c in bank.conditions}


@pytest.fixture(scope="module")
def bank():
    return load_prompt_bank(REPO / "prompts" / "dermatology.toml")


def test_an_alert_record_explains_itself_from_the_bank():
    live = LiveState("tiny")
    bank = small_bank()
    thresholds = effective_thresholds(bank)
    raised = []
    for second in range(4):
        raised += live.observe({"mel": 0.6, "nevus": 0.4}, bank, thresholds, now=NOON + dt.timedelta(seconds=second))
    (alert,) = raised
    assert (alert.number, alert.condition_id, alert.label, alert.threshold) == (1, "mel", "Melanoma", 0.3)
    assert alert.score == pytest.approx(0.6)
    assert alert.raised_at == "2025-03-01T12:00:02+00:00"  # ISO-8601, the third frame
    assert alert.groups == ("malignant",) and alert.snomed_ct == "93655004" and alert.icd10 == "C43.9"
    for words in ("Melanoma", "60.0 %", "30.0 %", "last 3 frames", "See a doctor within two weeks",
                  "SNOMED CT 93655004", "ICD-10 C43.9", "not a diagnosis"):
        assert words in alert.explanation
    assert live.current_alerts() == [alert]
    assert live.log_snapshot() == [alert]


def test_the_log_is_bounded_and_the_oldest_entries_go_first():
    live = LiveState("tiny", Smoothing(window=1, needed=1, gap=0.05), log_limit=10)
    bank = small_bank()
    thresholds = effective_thresholds(bank)
    for _ in range(15):  # alternate: raise, clear, raise...
        live.observe({"mel": 0.9}, bank, thresholds)
        live.observe({"mel": 0.0}, bank, thresholds)
    log = live.log_snapshot()
    assert len(log) == 10
    assert [alert.number for alert in log] == list(range(6, 16))


def test_log_downloads_hold_every_field_and_defuse_spreadsheet_formulas():
    live = LiveState("tiny")
    bank = PromptBank("x", "X", (Condition("evil", "=HYPERLINK(1)", ("benign",), ("x",), alert_threshold=0.1),),
                      small_bank().template_sets)
    for _ in range(3):
        live.observe({"evil": 0.9}, bank, {"evil": 0.1}, now=NOON)
    rows = list(csv.DictReader(io.StringIO(log_csv(live.log_snapshot()))))
    assert tuple(rows[0]) == LOG_FIELDS
    assert rows[0]["label"] == "'=HYPERLINK(1)" and rows[0]["condition_id"] == "evil"
    assert json.loads(json.dumps(log_json(live.log_snapshot())))[0]["label"] == "=HYPERLINK(1)"


def test_restart_forgets_the_smoothing_but_keeps_the_log():
    live = LiveState("tiny")
    bank = small_bank()
    thresholds = effective_thresholds(bank)
    for _ in range(3):
        live.observe({"mel": 0.9}, bank, thresholds)
    live.keep_crop(b"crop", "clinical")
    live.restart()
    assert live.current_alerts() == [] and live.smoothed("mel") == 0.0 and live.last_crop_jpeg == b""
    assert len(live.log_snapshot()) == 1


# -- through the app ---------------------------------------------------------------------
def frame_jpeg(seed: int = 1, width: int = 640, height: int = 480) -> bytes:
    # The lesion fills 40 % of the frame's height, so its crop passes the quality
    # gate's resolution check (224 px) in a 640 x 480 frame.
    image, _ = make_lesion_photo(seed, width=width, height=height, lesion_size=0.4)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def post_frame(browser: Browser, data: bytes, field: str = "frame"):
    boundary, body = encode_multipart(MultiDict([(field, FileStorage(io.BytesIO(data), "frame.jpg"))]))
    return browser.post("/live/frame", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def only_melanoma_alerts(browser: Browser, app) -> None:
    """Melanoma alerts on any score; no other condition can reach its threshold."""
    bank = app.extensions["privascan_registry"].banks["dermatology"]
    form = {f"threshold_{c.id}": "0" if c.id == "melanoma" else "1" for c in bank.conditions}
    assert browser.post("/live/thresholds", data=form).status_code == 200


def live_state(app):
    (data,) = app.extensions["privascan_store"]._sessions.values()
    return data.live


def test_live_page_full_and_partial(client, browser):
    html = client.get("/live").get_data(as_text=True)
    assert "<!doctype html>" in html
    for needle in ('id="live-video"', 'id="live-camera"', 'id="live-start"', 'id="live-speech"', 'id="live-fps"',
                   'id="live-latency"', 'id="live-thresholds"', 'id="live-log"', "/static/live.js", "Explain this frame"):
        assert needle in html
    assert "style=" not in html and "<script>" not in html  # strict CSP: no inline style or script
    partial = browser.get("/live").get_data(as_text=True)
    assert "<!doctype html>" not in partial and 'id="live-panel"' in partial
    assert 'href="/live"' in client.get("/").get_data(as_text=True)  # linked from the photos page, and back
    assert 'href="/"' in html


def test_a_frame_returns_the_live_partial_with_scores_and_figures(app, browser):
    assert browser.post("/live/start").status_code == 200
    response = post_frame(browser, frame_jpeg(1))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.startswith('<section id="live-result"') and "<!doctype html>" not in html
    words = text(response)
    assert "A lesion is in view" in words
    assert "Closest matches" in words and "Threshold" in words
    assert re.search(r"Frame 1: [\d.,]+ ms on the server \(decode [\d.,]+ ms, waiting [\d.,]+ ms, localize", words)
    assert live_state(app).frames == 1
    assert live_state(app).last_crop_jpeg.startswith(b"\xff\xd8")  # only the crop is kept, for "explain"


def test_a_frame_with_no_skin_in_view_says_so_and_keeps_no_crop(app, browser):
    browser.post("/live/start")
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (40, 90, 200)).save(buffer, format="JPEG")  # a blue wall
    response = post_frame(browser, buffer.getvalue())
    assert response.status_code == 200
    assert "No lesion in view" in text(response)
    assert "Closest matches" not in text(response)
    assert live_state(app).last_crop_jpeg == b""


@pytest.mark.parametrize("degrade_frame,words", [
    (lambda image: image.point(lambda v: v // 25), "Too dark: move to daylight or switch on a lamp"),
    (lambda image: image.filter(ImageFilter.GaussianBlur(12)), "Too blurred"),
])
def test_a_dark_or_blurred_frame_raises_no_alert_and_says_why(app, browser, degrade_frame, words):
    # Any assessed frame's melanoma score (about 1/18 from the tiny model) alerts after three frames.
    bank = app.extensions["privascan_registry"].banks["dermatology"]
    form = {f"threshold_{c.id}": "0.001" if c.id == "melanoma" else "1" for c in bank.conditions}
    assert browser.post("/live/thresholds", data=form).status_code == 200
    browser.post("/live/start")
    image = Image.open(io.BytesIO(frame_jpeg(2)))
    buffer = io.BytesIO()
    degrade_frame(image).save(buffer, format="JPEG", quality=90)
    pages = [post_frame(browser, buffer.getvalue()) for _ in range(4)]
    assert [page.status_code for page in pages] == [200] * 4
    for page in pages:
        assert words in text(page)
        assert "Alert: Melanoma" not in text(page)
        assert 'role="alert"' not in page.get_data(as_text=True)
    assert live_state(app).current_alerts() == [] and live_state(app).last_crop_jpeg == b""
    # The same frame undegraded alerts as before: the gate, not the scores, stopped it.
    good = [post_frame(browser, frame_jpeg(2)) for _ in range(3)]
    assert "Alert: Melanoma" in text(good[-1])


def test_a_low_threshold_raises_an_alert_that_is_logged_and_downloadable(app, browser):
    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    pages = [post_frame(browser, frame_jpeg(2)) for _ in range(4)]
    assert [page.status_code for page in pages] == [200] * 4
    assert "Alert: Melanoma" not in text(pages[1])  # two frames are not enough
    third = pages[2].get_data(as_text=True)
    assert 'role="alert"' in third and "Alert: Melanoma" in text(pages[2])
    assert 'id="live-log" class="live-log"' in third and 'hx-swap-oob="true"' in third  # the log updates out of band
    assert 'role="alert"' not in pages[3].get_data(as_text=True)  # still on, but not new: not announced again
    assert "Alert: Melanoma" in text(pages[3])
    assert re.search(r'data-alert-id="1"\s+data-speak="Alert: Melanoma, \d+\.\d percent."', third)

    csv_response = browser.get("/live/log.csv", htmx=False)
    assert csv_response.status_code == 200
    assert csv_response.headers["Cache-Control"] == "no-store"
    assert csv_response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert csv_response.mimetype == "text/csv"
    (row,) = list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))
    assert row["condition_id"] == "melanoma" and row["number"] == "1" and float(row["threshold"]) == 0.0
    assert dt.datetime.fromisoformat(row["raised_at"]).tzinfo is not None
    assert "ICD-10 C43.9" in row["explanation"]

    json_response = browser.get("/live/log.json", htmx=False)
    assert json_response.headers["Cache-Control"] == "no-store"
    assert json_response.headers["Content-Disposition"].startswith("attachment; filename=")
    body = json.loads(json_response.get_data(as_text=True))
    assert body["count"] == 1 and body["alerts"][0]["condition_id"] == "melanoma"
    assert body["alerts"][0]["snomed_ct"] == "93655004"

    page = browser.get("/live", htmx=False).get_data(as_text=True)
    assert "Alert log" in page and "ICD-10 C43.9" in page


def test_clearing_the_log(app, browser):
    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    for _ in range(3):
        post_frame(browser, frame_jpeg(3))
    assert len(live_state(app).log_snapshot()) == 1
    response = browser.post("/live/log/clear")
    assert response.status_code == 200 and "No alert yet" in text(response)
    assert live_state(app).log_snapshot() == []
    assert browser.get("/live/log.json", htmx=False).get_json()["count"] == 0


def test_thresholds_are_kept_in_the_session_and_checked(app, browser):
    response = browser.post("/live/thresholds", data={"threshold_melanoma": "0.12"})
    assert response.status_code == 200 and "saved" in text(response)
    assert re.search(r'name="threshold_melanoma"[^>]*value="0.12"', response.get_data(as_text=True))
    for bad, words in (("abc", "as a number"), ("1.5", "between 0 and 1"), ("-0.1", "between 0 and 1")):
        refused = browser.post("/live/thresholds", data={"threshold_melanoma": bad})
        assert refused.status_code == 400
        assert "Melanoma" in text(refused) and words in text(refused)
    page = browser.get("/live", htmx=False).get_data(as_text=True)
    assert re.search(r'name="threshold_melanoma"[^>]*value="0.12"', page)  # unchanged by the refusals
    reset = browser.post("/live/thresholds", data={"reset": "1"})
    assert "reset" in text(reset)
    default = app.extensions["privascan_registry"].banks["dermatology"].condition("melanoma").alert_threshold
    assert re.search(rf'name="threshold_melanoma"[^>]*value="{default}"', reset.get_data(as_text=True))


def test_explain_the_last_frame(app, browser):
    browser.post("/live/start")
    refused = browser.post("/live/explain")
    assert refused.status_code == 409 and "no frame to explain" in text(refused)
    post_frame(browser, frame_jpeg(4))
    response = browser.post("/live/explain")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'src="data:image/png;base64,' in html and "Where the model looked for" in text(response)
    runner = browser.post("/live/explain", data={"condition_id": "melanoma"})
    assert runner.status_code == 200 and "Melanoma" in text(runner)
    assert browser.post("/live/explain", data={"condition_id": "nope"}).status_code == 400


@pytest.mark.parametrize(
    "make, status, words",
    [
        (lambda: b"just some text", 415, "not a photo we can read"),
        (lambda: frame_jpeg(5)[:400], 400, "damaged"),
        (lambda: b"", 400, "empty"),
        (lambda: _png(2000, 1100), 413, "2 megapixels"),
        (lambda: frame_jpeg(5) + bytes(2 * 1024 * 1024), 413, "larger than the 2 MB"),
    ],
    ids=["text", "truncated", "empty", "too-many-pixels", "too-many-bytes"],
)
def test_bad_frames_get_a_message_and_a_4xx_and_leave_the_scan_untouched(app, browser, make, status, words):
    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    for _ in range(3):
        assert post_frame(browser, frame_jpeg(6)).status_code == 200
    live = live_state(app)
    before = (live.frames, live.log_snapshot(), live.last_crop_jpeg, live.smoothed("melanoma"))
    response = post_frame(browser, make())
    assert response.status_code == status
    assert words in text(response) and "frame" in text(response)
    assert "Traceback" not in text(response)
    assert response.headers["HX-Retarget"] == "#messages"
    assert (live.frames, live.log_snapshot(), live.last_crop_jpeg, live.smoothed("melanoma")) == before
    assert not live.frame_lock.locked()
    assert post_frame(browser, frame_jpeg(6)).status_code == 200  # and the next frame is fine


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_request_without_a_frame(browser):
    browser.post("/live/start")
    boundary, body = encode_multipart(MultiDict([("other", "x")]))
    response = browser.post("/live/frame", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 400 and "No frame was received" in text(response)


def test_frames_without_a_live_session_are_refused(app, browser):
    never_started = post_frame(browser, frame_jpeg(7))
    assert never_started.status_code == 410 and "Press Start" in text(never_started)
    no_cookie = app.test_client().post("/live/frame", data={"frame": (io.BytesIO(frame_jpeg(7)), "f.jpg")},
                            headers={"HX-Request": "true"}, content_type="multipart/form-data")
    assert no_cookie.status_code == 403 and "out of date" in text(no_cookie)


def test_frames_after_the_session_expired_are_refused(app, browser):
    browser.post("/live/start")
    assert post_frame(browser, frame_jpeg(8)).status_code == 200
    store = app.extensions["privascan_store"]
    (data,) = list(store._sessions.values())
    data.last_seen -= app.config["SESSION_IDLE_MINUTES"] * 60 + 1  # idle past the timeout
    response = post_frame(browser, frame_jpeg(8))
    assert response.status_code == 410 and "has ended" in text(response)
    assert len(store) == 0 and data.live is None


def test_clearing_the_session_deletes_the_live_state(app, browser):
    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    for _ in range(3):
        post_frame(browser, frame_jpeg(9))
    store = app.extensions["privascan_store"]
    (data,) = list(store._sessions.values())
    assert data.live is not None and data.live.log_snapshot()
    assert browser.post("/session/clear").status_code == 200
    assert data.live is None and len(store) == 0
    assert browser.get("/live/log.json", htmx=False).get_json()["count"] == 0
    assert post_frame(browser, frame_jpeg(9)).status_code == 410


def test_another_session_cannot_read_this_sessions_log(app, browser):
    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    for _ in range(3):
        post_frame(browser, frame_jpeg(10))
    assert "melanoma" in browser.get("/live/log.csv", htmx=False).get_data(as_text=True)
    intruder = Browser(app.test_client())
    assert intruder.get("/live/log.csv", htmx=False).get_data(as_text=True).strip() == ",".join(LOG_FIELDS)
    assert intruder.get("/live/log.json", htmx=False).get_json()["alerts"] == []
    intruder_page = text(intruder.get("/live", htmx=False))
    assert "Alert log (0)" in intruder_page and "No alert yet" in intruder_page and "C43.9" not in intruder_page
    assert intruder.post("/live/log/clear").status_code == 200
    assert len(live_state_of(app, browser)) == 1  # the intruder's "clear" touched only its own (empty) session


def live_state_of(app, browser: Browser):
    with browser.client.session_transaction() as cookie_session:
        store_id = cookie_session["store_id"]
    return app.extensions["privascan_store"].get(store_id, touch=False).live.log_snapshot()


def test_a_second_frame_while_one_is_in_flight_gets_429_and_other_sessions_are_served(app_factory):
    gate_plugin.ENTERED.clear()
    gate_plugin.RELEASE.clear()
    app = app_factory(DEFAULT_PLUGINS=("plugins.medsiglip", "plugins.dermatology", "tests.plugins.gate_plugin"),
                      CLINICAL_APP="gate")
    worker = app.extensions["privascan_worker"]
    answers: dict[str, object] = {}
    threads: list[threading.Thread] = []
    mine, other = Browser(app.test_client()), Browser(app.test_client())
    mine.post("/live/start")
    other.post("/live/start")
    try:
        threads.append(threading.Thread(target=lambda: answers.update(first=post_frame(mine, frame_jpeg(11)))))
        threads[-1].start()
        assert gate_plugin.ENTERED.wait(60)  # the first frame is on the worker, held at the gate
        second = post_frame(mine, frame_jpeg(12))
        assert second.status_code == 429
        assert "still being analysed" in text(second) and "dropped" in text(second)
        # Another session is not refused: its frame waits its turn on the bounded queue.
        threads.append(threading.Thread(target=lambda: answers.update(other=post_frame(other, frame_jpeg(13)))))
        threads[-1].start()
        for _ in range(1200):
            if worker.pending() == 1:
                break
            time.sleep(0.05)
        assert worker.pending() == 1
    finally:
        gate_plugin.RELEASE.set()
        for thread in threads:
            thread.join(60)
    assert answers["first"].status_code == 200 and "A lesion is in view" in text(answers["first"])
    assert answers["other"].status_code == 200
    assert post_frame(mine, frame_jpeg(14)).status_code == 200  # the lock was released


def test_a_live_session_writes_nothing_to_disk(app, browser):
    """Frames, alerts, the heatmap and the log downloads: no file is opened for writing (audit hook)."""
    from tests.test_no_disk_writes import RECORDER

    only_melanoma_alerts(browser, app)
    browser.post("/live/start")
    post_frame(browser, frame_jpeg(15))  # warm-up: first-use imports happen before recording
    RECORDER.writes.clear()
    RECORDER.active = True
    try:
        for seed in (16, 17, 18, 19):
            assert post_frame(browser, frame_jpeg(seed)).status_code == 200
        assert browser.post("/live/explain").status_code == 200
        assert "melanoma" in browser.get("/live/log.csv", htmx=False).get_data(as_text=True)
        assert browser.get("/live/log.json", htmx=False).get_json()["count"] == 1
        assert post_frame(browser, b"not an image").status_code == 415
        browser.post("/session/clear")
    finally:
        RECORDER.active = False
    assert RECORDER.writes == []
