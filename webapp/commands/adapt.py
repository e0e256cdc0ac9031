"""privascan adapt DATASET --out ADAPTER: learn from a clinic's own labelled photos.

Embeds every training and validation image once with the app's own pipeline
(localize, square crop, vision tower), fits a linear probe and few-shot
prototypes on the frozen embeddings, keeps the better on the validation split
and writes one small adapter file (safetensors weights plus a TOML header).
Test images are held out and not even embedded: `privascan eval --adapter`
measures the adapter on them. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .loading import CommandError, Progress, add_model_arguments, load_runtime, reports_errors

DEFAULT_TEST_SPLIT = 0.3
DEFAULT_VALIDATION_SPLIT = 0.5


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt",
        help="fit an adapter (linear probe or few-shot prototypes) on labelled images",
        description=__doc__.split("\n\n")[1],
        epilog="Dataset layouts and mapping as for eval; the adapter file and its limits: docs/evaluation.md.",
    )
    parser.add_argument("dataset", metavar="DATASET", help="image folder (one subfolder per label) or CSV with path,label[,...]")
    parser.add_argument("--out", required=True, metavar="ADAPTER", help="the adapter file to write, e.g. clinic.adapter.safetensors")
    parser.add_argument("--force", action="store_true", help="replace an existing adapter file")
    parser.add_argument("--map", action="append", default=[], metavar="LABEL=CONDITION",
                        help="map a dataset label to a bank condition id (repeatable); labels that are condition ids need none")
    parser.add_argument("--map-file", metavar="FILE", help="mapping as TOML (label = \"condition\") or CSV (label,condition)")
    parser.add_argument("--test-split", type=float, default=DEFAULT_TEST_SPLIT, metavar="FRACTION",
                        help=f"share of each condition held out for `eval --adapter` (default {DEFAULT_TEST_SPLIT}; 0: none)")
    parser.add_argument("--validation-split", type=float, default=DEFAULT_VALIDATION_SPLIT, metavar="FRACTION",
                        help=f"share of the rest used to choose the method (default {DEFAULT_VALIDATION_SPLIT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    add_model_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


@reports_errors("adapt")
def run(args: argparse.Namespace) -> int:
    from ..adapter import Adapter, bank_hash, save_adapter
    from ..evaluation.adapting import TEST, fit_adapter, split_counts, split_images
    from ..evaluation.dataset import load_dataset, load_map_file, parse_map_arguments, resolve_mapping
    from ..evaluation.runner import Arm, run_images
    from ..fingerprint import FingerprintUnavailable, model_fingerprint

    out = Path(args.out).expanduser()
    if out.is_dir():
        raise CommandError(f"--out {out} is a folder; name the adapter file, e.g. {out / 'clinic.adapter.safetensors'}")
    if not out.parent.is_dir():
        raise CommandError(f"--out {out}: the folder {out.parent} does not exist")
    if out.exists() and not args.force:
        raise CommandError(f"--out {out} exists; pass --force to replace it")
    dataset = load_dataset(args.dataset)
    explicit = load_map_file(args.map_file) if args.map_file else {}
    explicit.update(parse_map_arguments(args.map))

    runtime = load_runtime(args)
    bank = runtime.bank
    mapping = resolve_mapping(dataset.labels, explicit, [bank])
    conditions = [mapping[image.label] for image in dataset.images]
    parts = split_images(conditions, args.test_split, args.validation_split, args.seed)
    classes = [c.id for c in bank.conditions if c.id in set(conditions)]
    try:
        fingerprint = model_fingerprint(runtime.config["MODEL"])
    except FingerprintUnavailable as exc:
        raise CommandError(f"cannot identify the model's weights for the adapter's header: {exc}") from exc

    runtime.load_models(quiet=args.quiet)
    used = [i for i, part in enumerate(parts) if part != TEST]
    images = [dataset.images[i] for i in used]
    progress = Progress(len(images), "embedding", args.quiet)
    try:
        outcomes = run_images(
            images, mapping, runtime.clinical_app, runtime.registry, [Arm("A", bank, runtime.template_set, "")],
            runtime.config["MAX_IMAGE_PIXELS"], progress.step, keep_embeddings=True,
        )
    except ValueError as exc:  # a classifier without embeddings
        raise CommandError(str(exc)) from exc
    finally:
        progress.close()
    kept = [(o, parts[i]) for o, i in zip(outcomes, used) if o.analysed]
    skipped = [o for o in outcomes if not o.analysed]
    if not kept:
        raise CommandError("no image could be analysed: " + "; ".join(sorted({o.reason for o in skipped})[:3]))

    classifier = runtime.classifier
    text = classifier.text_embeddings(bank, runtime.template_set).detach().to("cpu").double().numpy()
    rows = [i for i, c in enumerate(bank.conditions) if c.id in set(classes)]
    fitted = fit_adapter(
        np.stack([o.embedding for o, _ in kept]),
        [o.condition for o, _ in kept],
        [part for _, part in kept],
        classes,
        text[rows],
        classifier.logit_scale,
        classifier.logit_bias,
    )
    adapter = Adapter(
        method=fitted.method,
        conditions=tuple(classes),
        weight=fitted.weight,
        bias=fitted.bias,
        model_fingerprint=fingerprint,
        bank=bank.name,
        bank_hash=bank_hash(bank),
        template_set=runtime.template_set.id,
        fitted_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        header={
            "app": runtime.clinical_app.name,
            "hyperparameters": fitted.hyperparameters,
            "split": {
                "seed": args.seed,
                "test_fraction": args.test_split,
                "validation_fraction": args.validation_split,
                "images": split_counts(conditions, parts),
                "skipped": len(skipped),
            },
            "validation": fitted.validation,
        },
    )
    try:
        save_adapter(out, adapter)
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from exc
    _print_summary(adapter, fitted, len(kept), len(skipped), out)
    return 0


def _short(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_summary(adapter, fitted, used: int, skipped: int, out: Path) -> None:
    print(f"{used} training and validation images embedded ({skipped} skipped); test images held out.")
    for name in ("zero_shot", "prototypes", "linear_probe"):
        row = fitted.validation[name]
        extra = {"prototypes": f" (alpha {row.get('alpha')})", "linear_probe": f" (C {row.get('C')})"}.get(name, "")
        print(
            f"validation {name.replace('_', ' ')}{extra}: balanced accuracy {_short(row['balanced_accuracy'])}, "
            f"macro AUROC {_short(row['macro_auroc'])}, ECE {_short(row['ece'])}, log loss {_short(row['log_loss'])}"
        )
    print(f"chosen: {adapter.method.replace('_', ' ')}, refitted on training + validation images.")
    print(f"{adapter.describe()} written to {out}")
    print("use it: PRIVASCAN_ADAPTER=<that file>; measure it: privascan eval DATASET --adapter <that file>")
    sys.stdout.flush()
