"""Train the YOLO lesion localizer from lesion segmentation masks (ISIC layout).

``privascan train-detector`` calls ``prepare_dataset`` then ``train``. The
steps, and what each writes (only under the working folder the user's
``--out`` names, see plugins/dermatology/train_detector_command.py):

1. ``find_cases``: every mask file ``<case>_segmentation.png`` (ISIC 2016-2018
   Task 1; ``<case>_mask.png`` works too) is paired with the image ``<case>.jpg``
   (or ``.jpeg``/``.png``) found anywhere under the same folder or an images
   folder, so both ISIC's single-folder and its two-folder downloads work.
2. ``mask_box``: the mask's lesion pixels (value >= 128) are split into
   8-connected components; the box is the bounding box of the largest
   component together with every component at least 10 % of its area. Specks
   of annotation noise are dropped; a lesion drawn in several large pieces
   (regression, a hair across it) keeps one box around all of them, which is
   what the crop needs.
3. ``prepare_dataset``: copies of the images (the user's own training data,
   never app users' photos) with YOLO labels ``0 cx cy w h`` and a data.yaml.
4. ``train``: YOLOv8n from ``yolov8n.yaml`` (random initialisation, nothing
   downloaded) or from ``--init-weights``, with every ultralytics feature that
   would reach the network off or refused.

Ultralytics is AGPL-3.0 and imported only here and in yolo_detector.py.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_mask")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_LEVEL = 128  # mask pixels at or above this are lesion
MIN_PART = 0.10  # components smaller than this share of the largest are noise
CLASS_NAME = "lesion"
EXIF_ORIENTATION = 0x0112


class TrainingDataError(ValueError):
    """Training data that cannot be used, with the reason."""


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    mask: Path


def _mask_case(path: Path) -> str | None:
    if path.suffix.lower() != ".png":
        return None
    for suffix in MASK_SUFFIXES:
        if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
            return path.stem[: -len(suffix)]
    return None


def find_cases(masks_dir: Path, images_dir: Path | None = None) -> tuple[list[Case], list[str]]:
    """Pairs of (image, mask) by case name, and the masks that have no image."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise TrainingDataError(f"{masks_dir} is not a folder")
    files = [p for p in sorted(masks_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if images_dir is not None:
        if not Path(images_dir).is_dir():
            raise TrainingDataError(f"{images_dir} is not a folder")
        files += [p for p in sorted(Path(images_dir).rglob("*")) if p.is_file() and not p.name.startswith(".")]
    masks: dict[str, Path] = {}
    images: dict[str, Path] = {}
    for path in files:
        case = _mask_case(path)
        if case is not None:
            if case in masks and masks[case] != path:
                raise TrainingDataError(f"two masks for case {case}: {masks[case]} and {path}")
            masks[case] = path
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in images and images[path.stem] != path:
                raise TrainingDataError(f"two images for case {path.stem}: {images[path.stem]} and {path}")
            images[path.stem] = path
    cases = [Case(name, images[name], masks[name]) for name in sorted(masks) if name in images]
    orphans = sorted(name for name in masks if name not in images)
    return cases, orphans


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), x1/y1 exclusive, around the lesion in a 2-D mask; None for an empty mask."""
    import cv2

    binary = (np.asarray(mask) >= MASK_LEVEL).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:  # label 0 is the background
        return None
    parts = stats[1:]
    areas = parts[:, cv2.CC_STAT_AREA]
    keep = parts[areas >= MIN_PART * areas.max()]
    x0 = int(keep[:, cv2.CC_STAT_LEFT].min())
    y0 = int(keep[:, cv2.CC_STAT_TOP].min())
    x1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
    y1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
    return x0, y0, x1, y1


def yolo_label(box: tuple[int, int, int, int], width: int, height: int) -> str:
    """One YOLO label line: class 0, centre and size normalised to the image."""
    x0, y0, x1, y1 = box
    return (
        f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
        f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
    )


@dataclass
class PreparedDataset:
    data_yaml: Path
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)  # empty masks: kept as images without a lesion
    skipped: list[str] = field(default_factory=list)  # "case: reason"
    val_is_train: bool = False


def prepare_dataset(cases: list[Case], dataset_dir: Path, val_fraction: float = 0.2, seed: int = 0) -> PreparedDataset:
    """Write images/{train,val}, labels/{train,val} and data.yaml under ``dataset_dir`` (which must not exist)."""
    labelled: list[tuple[Case, str]] = []
    prepared = PreparedDataset(data_yaml=dataset_dir / "data.yaml")
    for case in cases:
        try:
            with Image.open(case.image) as image:
                size = image.size
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            with Image.open(case.mask) as mask_image:
                mask = np.asarray(mask_image.convert("L"))
        except (OSError, Image.DecompressionBombError) as exc:
            prepared.skipped.append(f"{case.name}: cannot be read ({type(exc).__name__})")
            continue
        if orientation not in (1, None):
            prepared.skipped.append(f"{case.name}: the image has an EXIF rotation, so its mask may not line up")
            continue
        if (mask.shape[1], mask.shape[0]) != size:
            prepared.skipped.append(
                f"{case.name}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}"
            )
            continue
        box = mask_box(mask)
        if box is None:
            prepared.background.append(case.name)
        labelled.append((case, yolo_label(box, *size) if box else ""))
    if not labelled:
        raise TrainingDataError("no usable case (image + mask): " + "; ".join(prepared.skipped[:3]))

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    if len(labelled) < 5:
        # Too few to hold any out: validate on the training images (said in the summary).
        splits = {"train": order, "val": order}
        prepared.val_is_train = True
    else:
        n_val = min(len(labelled) - 1, max(1, math.ceil(val_fraction * len(labelled))))
        splits = {"val": order[:n_val], "train": order[n_val:]}
    for split, indices in splits.items():
        (dataset_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (dataset_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in sorted(indices):
            case, label = labelled[index]
            suffix = case.image.suffix.lower()
            shutil.copyfile(case.image, dataset_dir / "images" / split / f"{case.name}{suffix}")
            (dataset_dir / "labels" / split / f"{case.name}.txt").write_text(label + ("\n" if label else ""))
            getattr(prepared, split).append(case.name)
    # JSON strings are valid YAML scalars: no YAML writer needed, and any path is quoted safely.
    import json

    prepared.data_yaml.write_text(
        f"path: {json.dumps(str(dataset_dir.resolve()))}\n"
        "train: images/train\n"
        "val: images/val\n"
        f"names:\n  0: {CLASS_NAME}\n"
    )
    return prepared


_LOOPBACK = {"localhost", "127.0.0.1", "::1", None}


@contextmanager
def refuse_network():
    """Refuse every non-loopback connection while training: a library check cannot phone home."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK:
            raise OSError(f"network access refused while training (PrivaScan works offline): {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family != getattr(socket, "AF_UNIX", None) and not (
            isinstance(address, tuple) and address[0] in _LOOPBACK
        ):
            raise OSError(f"network access refused while training (PrivaScan works offline): {address}")
        return real_connect(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect = real_connect


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def train(
    data_yaml: Path,
    run_dir: Path,
    *,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    init_weights: Path | None = None,
    workers: int = 0,
    seed: int = 0,
) -> Path:
    """Fine-tune YOLOv8n on the prepared dataset; return the best checkpoint inside ``run_dir``."""
    from .yolo_detector import _import_ultralytics

    _import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.data import utils as data_utils

    real_check_font = data_utils.check_font
    # The dataset check asks for a plotting font and downloads it if missing; we draw no plots.
    data_utils.check_font = lambda *args, **kwargs: None
    try:
        with refuse_network():
            # "yolov8n.yaml" is an architecture shipped inside ultralytics: random weights, no download.
            model = YOLO(str(init_weights) if init_weights else "yolov8n.yaml", task="detect")
            model.train(
                data=str(data_yaml),
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                device=device,
                workers=workers,
                amp=False,  # its check downloads yolov8n.pt
                plots=False,  # plots need a downloaded font
                project=str(run_dir.parent.resolve()),
                name=run_dir.name,
                exist_ok=True,
                seed=seed,
                deterministic=True,
                cache=False,
                verbose=False,
            )
    finally:
        data_utils.check_font = real_check_font
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
    if not best.exists():
        raise RuntimeError(f"training finished without a checkpoint in {run_dir}")
    return best


def remove_quietly(path: Path) -> None:
    """Remove a folder this module created (used before re-running with --overwrite)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.remove(path)
