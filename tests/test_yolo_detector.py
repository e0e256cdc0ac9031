"""The YOLO detector's loading and box mapping, with a random-weight model built offline.

Random weights find nothing meaningful, so these tests check what can be
checked honestly: which paths are refused, that the configured file is what is
loaded, that the box returned is the model's best box mapped to the photo's
pixels, and that nothing reaches for the network or writes into the project.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from plugins.dermatology import yolo_detector
from plugins.dermatology.yolo_detector import YoloLesionDetector
from tests.synthetic import make_lesion_photo
from webapp.interfaces import Detector, ModelUnavailable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that tries to resolve a name or open a connection."""
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, args[:2]))
            raise OSError(f"network access attempted in a test: {name}{args[:2]}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    yield
    assert not attempts, attempts


@pytest.fixture(scope="module")
def ultralytics_config(tmp_path_factory):
    # Keep ultralytics' settings file out of the user's real config during tests.
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("ultralytics-config"))
    return yolo_detector._import_ultralytics()


@pytest.fixture(scope="module")
def random_weights(ultralytics_config, tmp_path_factory):
    """A YOLOv8n detection model with random weights, built from its yaml (offline) and saved."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("weights") / "random-lesion.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


def test_refuses_a_missing_path(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        YoloLesionDetector(tmp_path / "missing.pt")


@pytest.mark.parametrize("bare", ["yolov8n.pt", "yolo11n.pt", "best.pt"])
def test_refuses_a_bare_name_even_if_such_a_file_exists(tmp_path, monkeypatch, bare):
    monkeypatch.chdir(tmp_path)
    (tmp_path / bare).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bare name"):
        YoloLesionDetector(bare)


def test_refuses_a_directory_and_other_suffixes(tmp_path):
    with pytest.raises(ValueError):
        YoloLesionDetector(tmp_path)
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=".pt"):
        YoloLesionDetector(other)


def test_a_broken_file_is_unavailable_not_a_crash(tmp_path, ultralytics_config):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a torch checkpoint")
    detector = YoloLesionDetector(broken)
    with pytest.raises(ModelUnavailable):
        detector.load()


def test_coco_weights_are_refused(tmp_path, ultralytics_config):
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    names = {i: f"thing{i}" for i in range(80)}
    names.update({0: "person", 41: "cup"})
    model.model.names = names
    path = tmp_path / "looks-like-coco.pt"
    model.save(str(path))
    with pytest.raises(ModelUnavailable, match="COCO"):
        YoloLesionDetector(path).load()


def test_is_a_detector(random_weights):
    detector = YoloLesionDetector(random_weights)
    assert isinstance(detector, Detector)
    assert detector.name == "yolo"
    assert detector.weights_path == random_weights.resolve()


def test_default_floor_gives_none_or_a_valid_detection(random_weights):
    photo, _ = make_lesion_photo(3, width=700, height=500)
    found = YoloLesionDetector(random_weights).locate(photo)
    if found is not None:  # random weights almost never pass 0.25
        assert found.confidence >= 0.25
        assert 0 <= found.box.x0 < found.box.x1 <= 700 and 0 <= found.box.y0 < found.box.y1 <= 500


def test_detecting_leaves_torchs_thread_count_as_it_was(random_weights):
    """Ultralytics' first predict sets torch to cpu_count - 1 threads, process-wide; the detector puts it back."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    chosen = NUM_THREADS + 1  # a count ultralytics would never pick, so a change shows
    torch.set_num_threads(chosen)
    try:
        photo, _ = make_lesion_photo(5, width=640, height=480)
        YoloLesionDetector(random_weights).locate(photo)
        assert torch.get_num_threads() == chosen
        YOLO(str(random_weights), task="detect").predict(np.asarray(photo), verbose=False)  # ultralytics on its own
        assert torch.get_num_threads() == NUM_THREADS  # what the detector protects against
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("size", [(700, 500), (500, 900)])
def test_returns_the_models_best_box_in_photo_pixels(random_weights, size):
    """With the floor near zero random weights do return boxes: check the mapping of the best one."""
    width, height = size
    photo, _ = make_lesion_photo(4, width=width, height=height)
    detector = YoloLesionDetector(random_weights, min_confidence=1e-6)
    found = detector.locate(photo)
    assert found is not None and found.method == "yolo"
    box = found.box
    assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height

    # Reference: ultralytics' own handling of the PIL photo (it converts RGB to
    # BGR itself), so a channel-order mistake in the detector would show here.
    reference = detector.load().predict(photo, conf=1e-6, verbose=False)[0].boxes
    best = int(reference.conf.argmax())
    assert found.confidence == pytest.approx(float(reference.conf[best]), rel=1e-5)
    x0, y0, x1, y1 = reference.xyxy[best].tolist()
    assert box.x0 == max(0, int(np.floor(x0))) and box.y0 == max(0, int(np.floor(y0)))
    assert box.x1 == min(width, int(np.ceil(x1))) and box.y1 == min(height, int(np.ceil(y1)))


def test_fresh_process_imports_loads_and_predicts_offline(tmp_path, random_weights):
    """In a new interpreter (ultralytics not yet imported), audit every network and file-creation event."""
    script = textwrap.dedent(
        """
        import json, os, sys
        events = []
        def audit(event, args):
            if event in ("socket.getaddrinfo", "socket.connect", "socket.gethostbyname",
                         "http.client.connect", "urllib.Request"):
                events.append([event, repr(args)[:200]])
        sys.addaudithook(audit)

        from PIL import Image
        from plugins.dermatology.yolo_detector import YoloLesionDetector
        detector = YoloLesionDetector(sys.argv[1], min_confidence=1e-6)
        found = detector.locate(Image.new("RGB", (640, 480), (214, 166, 132)))
        from ultralytics import settings
        print(json.dumps({"events": events, "found": found is not None, "sync": settings["sync"],
                          "offline": os.environ["YOLO_OFFLINE"], "autoinstall": os.environ["YOLO_AUTOINSTALL"]}))
        """
    )
    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(random_weights)],
        cwd=work, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["events"] == []
    assert report["found"]
    assert report["sync"] is False
    assert (report["offline"], report["autoinstall"]) == ("1", "false")
    # Nothing written where the app runs (no runs/ folder, no downloaded weights) ...
    assert list(work.iterdir()) == []
    # ... and ultralytics' settings went to the user's config dir, not the project.
    assert (tmp_path / "config" / "privascan" / "Ultralytics" / "settings.json").is_file()
