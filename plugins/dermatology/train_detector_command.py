"""privascan train-detector MASKS_DIR --out WEIGHTS.pt: train the YOLO lesion localizer.

Derives one lesion box per case from its segmentation mask (ISIC layout:
ISIC_0000000.jpg with ISIC_0000000_segmentation.png), fine-tunes
YOLOv8n with ultralytics offline, and copies the best weights to --out,
ready for PRIVASCAN_LESION_WEIGHTS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from webapp.commands.loading import CommandError, reports_errors

WORK_HELP = (
    "working folder for the YOLO copy of the training data (images, labels, data.yaml) and ultralytics' run "
    "folder (default: <WEIGHTS folder>/<WEIGHTS name>-training). It holds copies of the training images you "
    "gave, not any app user's photos; delete it when done."
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-detector",
        help="train the YOLO lesion localizer from segmentation masks (ISIC layout)",
        description=__doc__.split("\n\n")[1],
        epilog=(
            "Accepted naming: a mask <case>_segmentation.png (or <case>_mask.png) and its image <case>.jpg, .jpeg "
            "or .png, anywhere under MASKS_DIR (or --images). The box is that of the mask's largest connected "
            "component plus any component at least 10 % of its size. Nothing is downloaded: training starts "
            "from yolov8n.yaml (random weights) unless --init-weights names a local checkpoint. See docs/evaluation.md."
        ),
    )
    parser.add_argument("masks_dir", metavar="MASKS_DIR", help="folder with images and their lesion masks")
    parser.add_argument("--out", required=True, metavar="WEIGHTS.pt", help="where to write the trained weights")
    parser.add_argument("--images", metavar="DIR", help="images in another folder than the masks (ISIC's two-folder download)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--imgsz", type=int, default=640, help="training image size in pixels (default 640)")
    parser.add_argument("--batch", type=int, help="batch size (default: 16, or fewer if fewer training images)")
    parser.add_argument("--device", help="cpu, 0 (first GPU), ... (default: the first GPU if there is one, else cpu)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0)")
    parser.add_argument("--init-weights", metavar="PATH", help="start from this local YOLO checkpoint instead of random weights")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of cases held out for validation (default 0.2; under 5 cases the training cases are reused)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default 0)")
    parser.add_argument("--work-dir", metavar="DIR", help=WORK_HELP)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing WEIGHTS file and the dataset/ and run/ folders of the working folder")
    parser.set_defaults(handler=run)


@reports_errors("train-detector")
def run(args: argparse.Namespace) -> int:
    from . import yolo_training as training

    out = Path(args.out).expanduser()
    if out.suffix != ".pt":
        raise CommandError(f"--out must name a .pt file (the localizer loads ultralytics .pt weights), got {out.name}")
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; pass --overwrite to replace it")
    if args.epochs < 1 or args.imgsz < 32 or (args.batch is not None and args.batch < 1):
        raise CommandError("--epochs and --batch must be at least 1, --imgsz at least 32")
    if not 0.0 < args.val_fraction < 1.0:
        raise CommandError("--val-fraction must be between 0 and 1")
    init_weights = _init_weights(args.init_weights)
    work = Path(args.work_dir).expanduser() if args.work_dir else out.parent / f"{out.stem}-training"
    dataset_dir, run_dir = work / "dataset", work / "run"
    for folder in (dataset_dir, run_dir):
        if folder.exists():
            if not args.overwrite:
                raise CommandError(f"{folder} exists (an earlier run?); pass --overwrite or another --work-dir")
    try:
        cases, orphans = training.find_cases(Path(args.masks_dir).expanduser(), Path(args.images).expanduser() if args.images else None)
    except training.TrainingDataError as exc:
        raise CommandError(str(exc)) from exc
    if not cases:
        raise CommandError(
            f"no case found in {args.masks_dir}: expected <case>_segmentation.png masks next to <case>.jpg images"
            + (f" ({len(orphans)} masks have no image, e.g. {orphans[0]})" if orphans else "")
        )

    if args.overwrite:
        for folder in (dataset_dir, run_dir):
            training.remove_quietly(folder)
    try:
        prepared = training.prepare_dataset(cases, dataset_dir, args.val_fraction, args.seed)
    except training.TrainingDataError as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"{len(cases)} cases: {len(prepared.train)} for training, {len(prepared.val)} for validation"
        + (" (the training cases: too few to hold any out)" if prepared.val_is_train else "")
        + (f", {len(prepared.background)} with an empty mask (kept as background)" if prepared.background else "")
        + (f"; {len(prepared.skipped)} skipped" if prepared.skipped else "")
        + (f"; {len(orphans)} masks without an image" if orphans else "")
        + f". Working folder: {work}",
        flush=True,
    )
    for reason in prepared.skipped[:10]:
        print(f"  skipped {reason}")

    device = training.pick_device(args.device)
    batch = args.batch or max(1, min(16, len(prepared.train)))
    started = time.perf_counter()
    best = training.train(
        prepared.data_yaml, run_dir, epochs=args.epochs, imgsz=args.imgsz, batch=batch, device=device,
        init_weights=init_weights, workers=args.workers, seed=args.seed,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out)

    from .yolo_detector import YoloLesionDetector

    YoloLesionDetector(out.resolve()).load()  # the app can load what we wrote
    print(f"trained {args.epochs} epoch(s) on {device} in {time.perf_counter() - started:.0f} s; weights: {out}")
    print(f"use them with PRIVASCAN_LESION_WEIGHTS={out.resolve()}")
    return 0


def _init_weights(value: str | None) -> Path | None:
    if not value:
        return None
    if os.sep not in value and (os.altsep is None or os.altsep not in value):
        raise CommandError(
            f"--init-weights must be a path to a local .pt file, not a bare name ({value!r}): "
            "ultralytics would download an official checkpoint for a bare name. Write ./NAME.pt for a file here."
        )
    path = Path(value).expanduser()
    if not path.is_file() or path.suffix != ".pt":
        raise CommandError(f"--init-weights {value} is not a .pt file")
    return path
