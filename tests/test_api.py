"""POST /api/analyze: the real pipeline over HTTP, stateless."""

from __future__ import annotations

import base64
import io

from PIL import Image

from tests.helpers import NCI_PHOTO, photo_bytes
from tests.synthetic import make_lesion_photo


def post_image(client, content: bytes, query: str = ""):
    return client.post(f"/api/analyze{query}", data={"image": (io.BytesIO(content), "x.jpg")}, content_type="multipart/form-data")


def test_analyse_the_nci_photo_with_a_heatmap(app, client):
    response = post_image(client, NCI_PHOTO.read_bytes(), "?explain=1")
    assert response.status_code == 200
    body = response.get_json()
    conditions = body["conditions"]
    assert len(conditions) >= 15
    probabilities = [c["probability"] for c in conditions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-3
    assert body["headline"]["id"] == conditions[0]["id"]
    assert body["risk"] in {"high", "moderate", "low", "unclear"}
    assert body["confidence"]
    x0, y0, x1, y1 = body["lesion_box"]
    assert 300 < x0 < 520 and 800 < x1 < 1200 and 250 < y0 < 450 and 700 < y1 < 900
    assert {"localize", "crop", "classify_and_explain"} <= set(body["timings"])
    header, data = body["heatmap"].split(",", 1)
    assert header == "data:image/png;base64"
    heatmap = Image.open(io.BytesIO(base64.b64decode(data)))
    assert heatmap.size == (448, 448) and heatmap.mode == "RGB"
    assert body["heatmap_condition"] == body["headline"]["id"]


def test_without_explain_no_heatmap_and_nothing_kept(app, client):
    response = post_image(client, photo_bytes(1))
    body = response.get_json()
    assert response.status_code == 200 and "heatmap" not in body
    assert "classify" in body["timings"]
    assert len(app.extensions["privascan_store"]) == 0  # no session was created
    assert "Set-Cookie" not in response.headers or "privascan_session" not in response.headers.get("Set-Cookie", "")


def test_box_is_in_original_pixels_after_exif_rotation(app, client):
    image, _ = make_lesion_photo(3, width=800, height=600)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 600 wide, 800 high
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    body = post_image(client, buffer.getvalue()).get_json()
    assert body["image_size"] == [600, 800]
    x0, y0, x1, y1 = body["lesion_box"]
    assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 800


def test_errors_are_json_with_a_status(client):
    missing = client.post("/api/analyze", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "image" in missing.get_json()["error"]
    bad = post_image(client, b"not an image")
    assert bad.status_code == 415 and bad.get_json()["error"].startswith("This file is not a photo")


def test_model_not_loaded_is_503(app_factory, tmp_path):
    app = app_factory(MODEL=str(tmp_path / "missing"))
    response = post_image(app.test_client(), photo_bytes(2))
    assert response.status_code == 503
    assert "not available" in response.get_json()["error"]
    assert response.headers["Retry-After"] == "30"


def test_an_api_timeout_is_a_503_and_the_job_never_runs_later(app_factory):
    """Force the timeout: the worker is busy with another job for longer than the API waits."""
    import threading

    from webapp.worker import Job

    app = app_factory(API_TIMEOUT=0.2)
    worker = app.extensions["privascan_worker"]
    gate = threading.Event()
    worker.submit(Job("busy", lambda: gate.wait(30)))
    try:
        response = post_image(app.test_client(), photo_bytes(4))
        assert response.status_code == 503
        assert "busy" in response.get_json()["error"]
        assert worker.pending() == 0  # the API's job was cancelled, not left queued
    finally:
        gate.set()
    assert worker.join_idle(30)
    assert worker.current is None and worker.pending() == 0


def test_the_gates_verdicts_are_in_the_json(app, client):
    from PIL import ImageFilter

    good = post_image(client, NCI_PHOTO.read_bytes()).get_json()
    assert good["assessable"] is True and good["tier"] in {"refer_urgently", "refer", "monitor"}
    assert good["quality"]["passed"] is True
    names = {check["name"] for check in good["quality"]["checks"]}
    assert {"sharpness", "noise", "exposure_dark", "exposure_bright", "clipping", "resolution", "framing", "colour"} == names
    assert all(set(check) == {"name", "value", "limit", "passed", "hint"} for check in good["quality"]["checks"])
    assert good["scope"]["in_scope"] is None and "cannot judge" in good["scope"]["message"]  # random weights
    assert good["skin_tone"]["band"] in {"very_light", "light"} and isinstance(good["skin_tone"]["ita"], float)
    assert good["calibrated"] is False and "relative scores" in good["scores_note"]

    blurred = io.BytesIO()
    Image.open(NCI_PHOTO).filter(ImageFilter.GaussianBlur(25)).save(blurred, format="JPEG")
    response = post_image(client, blurred.getvalue())
    assert response.status_code == 200  # a valid input; the answer is "can't assess"
    refused = response.get_json()
    assert refused["assessable"] is False and refused["tier"] == "cant_assess"
    assert refused["conditions"] == [] and refused["headline"] is None
    failed = [check for check in refused["quality"]["checks"] if not check["passed"]]
    assert [check["name"] for check in failed] == ["sharpness"] and refused["reasons"] == [failed[0]["hint"]]

    anyway = post_image(client, blurred.getvalue(), "?analyse_anyway=1").get_json()
    assert anyway["low_quality"] is True and anyway["assessable"] is False and anyway["conditions"]
    assert anyway["headline"]["summary"] == ""  # never advice on a low-quality result
