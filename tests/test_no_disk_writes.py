"""Rule 1, proven in-process: a whole workflow opens no file for writing.

A Python audit hook records every open in a write/create mode and every
rename, removal, directory creation and temp file, from any thread (the
inference worker included), while a real session uploads five photos (one of
8 MB, one HEIC), analyses them with heatmaps, asks for a second heatmap, uses
the JSON API, runs a live scan (frames that raise alerts, a heatmap, the log
downloads), deletes a photo and clears the session.
"""

from __future__ import annotations

import io
import os
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from tests.helpers import NCI_PHOTO, multipart, photo_bytes

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
IGNORED_PREFIXES = ("/dev/", "/proc/", "/sys/")


class WriteRecorder:
    def __init__(self):
        self.active = False
        self.writes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and not (isinstance(path, str) and path.startswith(IGNORED_PREFIXES)) and not isinstance(path, int):
                self._record(event, path)
        elif event in {"os.rename", "os.remove", "os.mkdir", "os.link", "os.symlink", "shutil.copyfile",
                       "tempfile.mkstemp", "tempfile.mkdtemp", "os.truncate"}:
            self._record(event, args[0] if args else "")

    def _record(self, event, path) -> None:
        if os.environ.get("PRIVASCAN_TRACE_WRITES"):
            import traceback

            traceback.print_stack(limit=15)
        with self._lock:
            self.writes.append((event, str(path)))


RECORDER = WriteRecorder()
sys.addaudithook(RECORDER)  # audit hooks cannot be removed; it records only while active


@pytest.fixture
def recording():
    RECORDER.writes.clear()
    RECORDER.active = True
    yield RECORDER
    RECORDER.active = False


def big_photo(target_bytes: int = 8 * 1024 * 1024) -> bytes:
    """A noisy JPEG of about 8 MB: far above Werkzeug's 500 KB spooling threshold."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1900, 2600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)
    data = buffer.getvalue()
    assert len(data) >= target_bytes * 0.9, len(data)
    return data


def heic_photo() -> bytes:
    from pillow_heif import from_pillow

    from tests.synthetic import make_lesion_photo

    image, _ = make_lesion_photo(9)
    buffer = io.BytesIO()
    from_pillow(image).save(buffer, quality=80)
    return buffer.getvalue()


def test_full_workflow_writes_nothing_to_disk(app, browser, recording):
    photos = [
        (big_photo(), "eight-megabytes.jpg"),
        (heic_photo(), "phone.heic"),
        (NCI_PHOTO.read_bytes(), "nci.jpg"),
        (photo_bytes(1, "PNG"), "a.png"),
        (photo_bytes(2, "WEBP"), "b.webp"),
    ]
    assert browser.upload(*photos).status_code == 200
    ids = browser.photo_ids()
    assert len(ids) == 5
    browser.post("/analyze-all")
    assert app.extensions["privascan_worker"].join_idle(300)
    card = browser.get(f"/photos/{ids[0]}/card").get_data(as_text=True)
    # The 8 MB photo is random noise: the quality gate refuses it; "Analyse anyway" runs the model too.
    assert "Analyse anyway" in card
    browser.post(f"/photos/{ids[0]}/analyze", data={"analyse_anyway": "1"})
    assert app.extensions["privascan_worker"].join_idle(300)
    card = browser.get(f"/photos/{ids[0]}/card").get_data(as_text=True)
    assert "Analysed, low quality" in card
    runner_up = card.split("/explain/")[1].split('"')[0]
    browser.post(f"/photos/{ids[0]}/explain/{runner_up}")
    assert app.extensions["privascan_worker"].join_idle(120)
    for path in ("photo.jpg", "crop.jpg", "heatmap.png", f"heatmap/{runner_up}.png", "located.jpg"):
        assert browser.get(f"/photos/{ids[0]}/{path}").status_code == 200
    api = browser.client.post("/api/analyze?explain=1&analyse_anyway=1", **multipart([("image", (photos[0][0], "x.jpg"))]))
    assert api.status_code == 200
    fhir_api = browser.client.post("/api/analyze?fhir=1&crop=1", **multipart([("image", (photos[3][0], "x.png"))]))
    assert fhir_api.status_code == 200 and fhir_api.get_json()["resourceType"] == "Bundle"
    # Lesions, comparison, reports and exports (issue 15): all made in memory.
    assert browser.post(f"/photos/{ids[2]}/lesion", data={"lesion": "new", "name": "Arm", "site": "forearm"}).status_code == 200
    data = next(iter(app.extensions["privascan_store"]._sessions.values()))
    lesion_id = next(iter(data.lesions))
    assert browser.post(f"/photos/{ids[3]}/lesion", data={"lesion": lesion_id}).status_code == 200
    for path in (f"/lesions/{lesion_id}", f"/report/lesions/{lesion_id}", f"/report/photos/{ids[0]}", "/report/session",
                 f"/export/photos/{ids[0]}.fhir.json", "/export/session.fhir.json?crop=1", "/export/session.csv",
                 "/export/session.json", f"/export/lesions/{lesion_id}.fhir.json"):
        assert browser.get(path, htmx=False).status_code == 200, path
    if "live.frame" in app.view_functions:  # live scan: frames, a heatmap of the last one, the alert log
        bank = app.extensions["privascan_registry"].banks["dermatology"]
        thresholds = {f"threshold_{c.id}": "0" for c in bank.conditions}  # every frame in view alerts
        assert browser.post("/live/thresholds", data=thresholds).status_code == 200
        assert browser.post("/live/start").status_code == 200
        frame = Image.open(io.BytesIO(photos[2][0])).convert("RGB").resize((640, 360))
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=80)
        for _ in range(3):
            response = browser.post("/live/frame", **multipart([("frame", (buffer.getvalue(), "frame.jpg"))]))
            assert response.status_code == 200
        assert browser.post("/live/explain").status_code == 200
        assert browser.get("/live/log.json", htmx=False).get_json()["count"] > 0
        assert browser.get("/live/log.csv", htmx=False).status_code == 200
    browser.post(f"/photos/{ids[1]}/delete")
    browser.post("/session/clear")
    recording.active = False
    assert recording.writes == []


def test_the_recorder_does_see_writes(recording, tmp_path):
    """The hook is not blind: a deliberate write is caught (then the test clears it)."""
    (tmp_path / "probe.txt").write_text("x")
    recording.active = False
    assert any(path.endswith("probe.txt") for _, path in recording.writes)
