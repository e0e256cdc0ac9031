"""``privascan train-detector``: boxes from masks, a YOLO dataset, one offline epoch, weights the localizer loads.

The training set is made here: six 128 px synthetic lesion photos with their
exact lesion masks. One epoch at 64 px trains nothing useful, so the end-to-end
test checks what can be checked: the labels are the masks' boxes, ultralytics
never reaches the network, everything lands in the folders the user named,
and the localizer loads the weights and runs.
"""

from __future__ import annotations

import contextlib
import socket
import sys

import numpy as np
import pytest

from plugins.dermatology import yolo_training
from plugins.dermatology.yolo_training import find_cases, mask_box, yolo_label
from tests.synthetic import make_lesion_photo, make_lesion_photo_with_mask
from webapp import cli


def test_the_mask_variant_draws_the_same_photo_and_its_box():
    image, box = make_lesion_photo(5, width=160, height=120)
    same, same_box, mask = make_lesion_photo_with_mask(5, width=160, height=120)
    assert np.array_equal(np.asarray(image), np.asarray(same)) and box == same_box
    assert mask.mode == "L" and mask.size == image.size
    assert mask_box(np.asarray(mask)) == tuple(box.as_list())


def test_mask_box_keeps_large_parts_and_drops_specks():
    mask = np.zeros((50, 60), dtype=np.uint8)
    mask[10:30, 10:30] = 255  # the lesion: 400 px
    mask[12:20, 40:47] = 255  # a second large piece: 56 px, 14 % of 400 -> kept
    mask[45:47, 2:4] = 255  # a speck: 4 px, 1 % -> dropped
    assert mask_box(mask) == (10, 10, 47, 30)
    mask[12:20, 40:47] = 0
    mask[12:14, 40:45] = 255  # now only 10 px, 2.5 %: dropped too
    assert mask_box(mask) == (10, 10, 30, 30)
    mask[:] = 100  # below the 128 lesion level everywhere
    assert mask_box(mask) is None


def test_yolo_label_is_centre_and_size_normalised():
    # Box 10..30 x 20..60 in a 100 x 80 image: centre (20, 40) -> (0.2, 0.5), size (20, 40) -> (0.2, 0.5).
    assert yolo_label((10, 20, 30, 60), 100, 80) == "0 0.200000 0.500000 0.200000 0.500000"


def test_find_cases_pairs_isic_names_across_folders(tmp_path):
    images, masks = tmp_path / "ISIC2018_Task1-2_Training_Input", tmp_path / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir()
    masks.mkdir()
    for name in ("ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000001_superpixels.png", "LICENSE.txt"):
        (images / name).write_bytes(b"x")
    for name in ("ISIC_0000000_segmentation.png", "ISIC_0000001_segmentation.png", "ISIC_0000009_segmentation.png"):
        (masks / name).write_bytes(b"x")
    cases, orphans = find_cases(tmp_path)
    assert [(c.name, c.image.name, c.mask.name) for c in cases] == [
        ("ISIC_0000000", "ISIC_0000000.jpg", "ISIC_0000000_segmentation.png"),
        ("ISIC_0000001", "ISIC_0000001.jpg", "ISIC_0000001_segmentation.png"),
    ]
    assert orphans == ["ISIC_0000009"]
    cases, _ = find_cases(masks, images_dir=images)
    assert len(cases) == 2


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, args[:2]))
            raise OSError(f"network access attempted in a test: {name}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    yield attempts
    assert not attempts, attempts


@pytest.fixture
def isic_folder(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    boxes = {}
    for seed in range(6):
        image, box, mask = make_lesion_photo_with_mask(seed, width=128, height=128, lesion_size=0.35)
        name = f"ISIC_{seed:07d}"
        image.save(folder / f"{name}.jpg", quality=90)
        mask.save(folder / f"{name}_segmentation.png")
        boxes[name] = box
    return folder, boxes


def test_trains_offline_into_the_named_folders_and_the_localizer_loads_it(tmp_path, isic_folder, no_network, monkeypatch, capsys):
    from plugins.dermatology.yolo_detector import YoloLesionDetector

    # Without the command's own guard, so that any attempt ultralytics makes reaches no_network and fails the test.
    monkeypatch.setattr(yolo_training, "refuse_network", contextlib.nullcontext)
    if "ultralytics" not in sys.modules:  # keep its settings file out of the user's config during tests
        monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics-config"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    masks, boxes = isic_folder
    masks_before = sorted(p.name for p in masks.iterdir())
    out = tmp_path / "models" / "lesions.pt"

    code = cli.main(["train-detector", str(masks), "--out", str(out), "--epochs", "1", "--imgsz", "64", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "6 cases: 4 for training, 2 for validation" in printed and "PRIVASCAN_LESION_WEIGHTS" in printed

    # Only the weights and the working folder beside them; the user's data and the cwd untouched.
    assert out.is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["lesions-training", "lesions.pt"]
    assert sorted(p.name for p in masks.iterdir()) == masks_before
    assert list(cwd.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"masks", "models", "cwd", "ultralytics-config"}

    work = tmp_path / "models" / "lesions-training"
    dataset = work / "dataset"
    assert (dataset / "data.yaml").is_file() and (work / "run" / "weights").is_dir()
    labels = sorted((dataset / "labels").glob("*/*.txt"))
    assert len(labels) == 6
    for label in labels:
        box = boxes[label.stem]
        assert label.read_text() == yolo_label(tuple(box.as_list()), 128, 128) + "\n"
        assert (dataset / "images" / label.parent.name / f"{label.stem}.jpg").read_bytes() == (masks / f"{label.stem}.jpg").read_bytes()

    detector = YoloLesionDetector(out, image_size=128)
    assert detector.load().names == {0: "lesion"}
    image, _ = make_lesion_photo(42, width=160, height=128)
    found = detector.locate(image)
    assert found is None or (0 <= found.box.x0 < found.box.x1 <= 160 and 0 <= found.box.y0 < found.box.y1 <= 128)

    # A second run refuses to overwrite, unless asked.
    assert cli.main(["train-detector", str(masks), "--out", str(out), "--epochs", "1", "--imgsz", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_refusals_come_before_any_write(tmp_path, isic_folder, capsys):
    masks, _ = isic_folder
    cases = [
        (["--out", str(tmp_path / "w.onnx")], "must name a .pt file"),
        (["--out", str(tmp_path / "w.pt"), "--init-weights", "yolov8n.pt"], "not a bare name"),
        (["--out", str(tmp_path / "w.pt"), "--init-weights", str(tmp_path / "none.pt")], "is not a .pt file"),
        (["--out", str(tmp_path / "w.pt"), "--val-fraction", "1"], "between 0 and 1"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for arguments, message in cases:
        assert cli.main(["train-detector", str(masks), *arguments]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["train-detector", str(tmp_path / "nowhere"), "--out", str(tmp_path / "w.pt")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train-detector", str(empty), "--out", str(tmp_path / "w.pt")]) == 2
    assert "no case found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["empty"])


def test_network_is_refused_while_training():
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    with yolo_training.refuse_network():
        with pytest.raises(OSError, match="refused"):
            socket.getaddrinfo("example.org", 443)
        with pytest.raises(OSError, match="refused"):
            socket.create_connection(("203.0.113.1", 80), timeout=0.1)
    assert socket.getaddrinfo is real_getaddrinfo and socket.socket.connect is real_connect  # restored
