"""privascan eval DATASET --out DIR: measure a prompt bank on labelled images.

Runs the app's own pipeline (localize, crop, classify; no heatmap) on every
image, and writes report.json and a self-contained report.html into
--out. Optionally compares a second bank or template set on the same
image embeddings, and fits alert thresholds into a bank-overrides file.
Nothing else is written: no crops, no temporary images. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tomllib
from pathlib import Path

import numpy as np

from ..bank_overrides import format_overrides, with_thresholds
from ..prompt_bank import load_prompt_bank
from .loading import CommandError, Progress, add_model_arguments, load_runtime, reports_errors


SKIN_TONE_SUBGROUP = "skin tone (estimated ITA band)"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a prompt bank on labelled images (JSON + HTML report)",
        description=__doc__.split("\n\n")[1],
        epilog="Dataset layouts, the mapping, the metrics and the overrides file: docs/evaluation.md.",
    )
    parser.add_argument("dataset", metavar="DATASET", help="image folder (one subfolder per label) or CSV with path,label[,...]")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for report.json and report.html (created if missing)")
    parser.add_argument("--map", action="append", default=[], metavar="LABEL=CONDITION",
                        help="map a dataset label to a bank condition id (repeatable); labels that are condition ids need none")
    parser.add_argument("--map-file", metavar="FILE", help="mapping as TOML (label = \"condition\") or CSV (label,condition)")
    parser.add_argument("--subgroup-column", metavar="NAME", help="CSV column to report figures by (e.g. fitzpatrick)")
    parser.add_argument("--restrict-to-mapped", action="store_true",
                        help="predict among the dataset's conditions only (as zero-shot papers do) instead of the whole bank")
    parser.add_argument("--ece-bins", type=int, default=10, metavar="N", help="equal-width bins for calibration (default 10)")
    add_model_arguments(parser)
    compare = parser.add_argument_group("compare (arm B, scored from the same image embeddings)")
    compare.add_argument("--compare-bank", metavar="BANK.toml", help="a second prompt bank file")
    compare.add_argument("--compare-template-set", metavar="ID", help="a second template set (of the second bank if given)")
    compare.add_argument("--compare-int8", action="store_true",
                         help="arm B: the same crops through the vision tower with its frozen layers in dynamic int8 "
                              "(PRIVASCAN_INT8), to decide with real weights whether int8 is accurate enough (CPU)")
    adapted = parser.add_argument_group("adapter (arm B: the same image embeddings scored by a fitted adapter)")
    adapted.add_argument("--adapter", metavar="ADAPTER",
                         help="an adapter file from `privascan adapt`: report with and without it, on its held-out test images")
    adapted.add_argument("--unseen", action="store_true",
                         help="none of DATASET's images were used to fit the adapter: measure on all of them")
    fit = parser.add_argument_group("alert thresholds")
    fit.add_argument("--fit-thresholds", action="append", default=[], metavar="CONDITION=SENSITIVITY",
                     help="fit the highest alert threshold reaching this sensitivity on a validation split (repeatable)")
    fit.add_argument("--validation-split", type=float, default=0.5, metavar="FRACTION",
                     help="share of each label used to fit thresholds; the rest is held out (default 0.5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    fit.add_argument("--fit-calibration", action="store_true",
                     help="fit a softmax temperature on the validation split (ECE before and after on the held-out rest)")
    fit.add_argument("--overrides-out", metavar="FILE.toml",
                     help="write the fitted thresholds and temperature as a bank-overrides file")
    parser.add_argument("--out-of-scope", metavar="FOLDER",
                        help="a folder of pictures that are not this modality: report the scope gate's rejection rate")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


@reports_errors("eval")
def run(args: argparse.Namespace) -> int:
    from ..evaluation import report as reporting
    from ..evaluation.dataset import load_dataset, load_map_file, parse_map_arguments, resolve_mapping
    from ..evaluation.runner import Arm, arm_scores, compare_arms, compute_metrics, run_images, subset
    from ..evaluation.thresholds import fit_thresholds, parse_targets, stratified_split

    if args.ece_bins < 1:
        raise CommandError("--ece-bins must be at least 1")
    dataset = load_dataset(args.dataset, args.subgroup_column)
    explicit = load_map_file(args.map_file) if args.map_file else {}
    explicit.update(parse_map_arguments(args.map))  # --map wins over the file
    targets = parse_targets(args.fit_thresholds)
    if args.overrides_out and not targets and not args.fit_calibration:
        raise CommandError("--overrides-out needs --fit-thresholds CONDITION=SENSITIVITY or --fit-calibration")
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CommandError(f"--out {out_dir} exists and is not a folder")

    if args.unseen and not args.adapter:
        raise CommandError("--unseen goes with --adapter")
    if args.adapter and (args.compare_bank or args.compare_template_set or targets):
        raise CommandError("--adapter is its own comparison: run --compare-* or --fit-thresholds separately")

    if args.compare_int8 and (args.compare_bank or args.compare_template_set or args.adapter):
        raise CommandError("--compare-int8 is its own comparison (fp32 against int8): run --compare-* or --adapter separately")

    runtime = load_runtime(args)
    arms = [Arm("A", runtime.bank, runtime.template_set, _origin(runtime), label="fp32" if args.compare_int8 else "")]
    if args.compare_bank or args.compare_template_set:
        arms.append(_second_arm(args, arms[0], load_prompt_bank))
    mapping = resolve_mapping(dataset.labels, explicit, [arm.bank for arm in arms])
    adapter_split = None
    if args.adapter:
        adapter = _load_checked_adapter(args.adapter, runtime)
        arms.append(Arm("B", runtime.bank, runtime.template_set, f"file {Path(args.adapter).name}", adapter=adapter))
        dataset, adapter_split = _adapter_test_images(dataset, mapping, adapter, args.unseen)
    evaluated = set(mapping.values())
    classes = [c.id for c in runtime.bank.conditions if c.id in evaluated]
    not_evaluated = sorted(set(targets) - evaluated)
    if not_evaluated:
        raise CommandError(
            f"--fit-thresholds names {', '.join(not_evaluated)}, which no dataset label maps to "
            f"(evaluated conditions: {', '.join(classes)})"
        )

    runtime.load_models(quiet=args.quiet)
    if args.compare_int8:
        arms.append(_int8_arm(runtime, arms[0]))
    progress = Progress(len(dataset.images), "evaluating", args.quiet)
    try:
        outcomes = run_images(
            dataset.images, mapping, runtime.clinical_app, runtime.registry, arms, runtime.config["MAX_IMAGE_PIXELS"], progress.step
        )
    except ValueError as exc:  # an adapter with a classifier that exposes no embeddings
        raise CommandError(str(exc)) from exc
    finally:
        progress.close()
    analysed = [o for o in outcomes if o.analysed]
    if not dataset.subgroup_column and any(o.skin_tone_band for o in analysed):
        # No skin-type column: the estimated ITA band is the subgroup (docs/clinical-safety.md).
        dataset = dataclasses.replace(dataset, subgroup_column=SKIN_TONE_SUBGROUP)
        for o in outcomes:
            o.image = dataclasses.replace(o.image, subgroup=o.skin_tone_band or "not estimated")
    if not analysed:
        reasons = sorted({o.reason for o in outcomes})
        raise CommandError("no image could be analysed: " + "; ".join(reasons[:3]))

    scores = {arm.key: arm_scores(outcomes, arm, classes, args.restrict_to_mapped) for arm in arms}
    arm_metrics = {arm.key: compute_metrics(scores[arm.key], arm.bank, args.restrict_to_mapped, args.ece_bins) for arm in arms}
    subgroups: dict[str, dict] = {}
    if dataset.subgroup_column:
        names = [o.image.subgroup for o in analysed]
        for arm in arms:
            subgroups[arm.key] = {
                name: compute_metrics(
                    subset(scores[arm.key], np.array([n == name for n in names])), arm.bank, args.restrict_to_mapped, args.ece_bins
                )
                for name in sorted(set(names), key=_natural)
            }
    comparison = compare_arms(scores["A"], scores["B"]) if len(arms) > 1 else None

    thresholds = validation = overrides_text = calibration = None
    if targets or args.fit_calibration:
        validation = stratified_split(scores["A"].true, args.validation_split, args.seed)
    if args.fit_calibration:
        from ..calibration import apply_temperature
        from ..evaluation.calibration import calibration_report

        bank_probabilities = np.array([o.probabilities["A"] for o in analysed], dtype=np.float64)
        calibration = calibration_report(
            bank_probabilities, scores["A"].true, [c.id for c in runtime.bank.conditions], validation, args.ece_bins
        )
        calibration["overrides_file"] = str(Path(args.overrides_out).expanduser()) if args.overrides_out else None
        calibrated = {id(o): apply_temperature(o.probabilities["A"], calibration["temperature"]) for o in analysed}
    if targets:
        first = scores["A"]
        if calibration is not None:
            # The app applies alert thresholds to calibrated probabilities: fit them on those.
            first = arm_scores(
                [dataclasses.replace(o, probabilities={**o.probabilities, "A": calibrated[id(o)]}) for o in analysed],
                arms[0], classes, args.restrict_to_mapped,
            )
        fitted = fit_thresholds(
            first.bank_probabilities, first.true, validation, targets,
            {c: runtime.bank.condition(c).alert_threshold for c in targets},
        )
        thresholds = {
            "validation_split": args.validation_split,
            "seed": args.seed,
            "validation_images": int(validation.sum()),
            "held_out_images": int((~validation).sum()),
            "overrides_file": str(Path(args.overrides_out).expanduser()) if args.overrides_out else None,
            "conditions": fitted,
        }
    if args.overrides_out:
        overrides_text = _overrides_text(runtime, dataset, thresholds, calibration)
    out_of_scope = _out_of_scope(args, runtime) if args.out_of_scope else None

    settings = {
        "app": runtime.clinical_app.name,
        "classifier": runtime.classifier.describe(),
        "localizer": runtime.localizer,
        "restrict_to_mapped": args.restrict_to_mapped,
        "ece_bins": args.ece_bins,
        "embeddings_reused": len(arms) > 1 and arms[1].classifier is None and bool(getattr(runtime.classifier, "embed_crops", None)),
        "compare_int8": bool(args.compare_int8),
        "adapter": arms[-1].adapter.as_dict() if arms[-1].adapter is not None else None,
        "adapter_split": adapter_split,
    }
    report = reporting.assemble(
        dataset=dataset, mapping=mapping, settings=settings, arms=arms, outcomes=outcomes, scores=scores,
        arm_metrics=arm_metrics, subgroups=subgroups, comparison=comparison, thresholds=thresholds,
        validation=validation,
    )
    report["calibration"] = calibration
    report["out_of_scope"] = out_of_scope
    try:
        json_path, html_path = reporting.write_report(out_dir, report)
        if overrides_text is not None:
            Path(args.overrides_out).expanduser().write_text(overrides_text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename or 'the report'}: {exc.strerror or exc}") from exc
    _print_summary(report, json_path, html_path, args.overrides_out)
    return 0


def _load_checked_adapter(path: str, runtime):
    """The adapter file, refused unless it was fitted for this model and this bank."""
    from ..adapter import fingerprint_for_check, load_adapter

    adapter = load_adapter(path)
    where = f"adapter {Path(path).name}"
    adapter.check_matches(fingerprint_for_check(runtime.config["MODEL"], where), runtime.bank, where)
    return adapter


def _adapter_test_images(dataset, mapping: dict[str, str], adapter, unseen: bool):
    """The images the adapter never saw: its own held-out test split of this dataset, or all with --unseen."""
    import dataclasses

    from ..evaluation.adapting import TEST, split_counts, split_images

    conditions = [mapping[image.label] for image in dataset.images]
    outside = sorted(set(conditions) - set(adapter.conditions))
    if outside:
        raise CommandError(
            f"the dataset has condition(s) {', '.join(outside)} that the adapter was not fitted on "
            f"(it knows {', '.join(adapter.conditions)})"
        )
    if unseen:
        return dataset, {"kind": "unseen", "images": len(dataset.images)}
    split = adapter.header.get("split", {})
    advice = "if none of its images were used to fit the adapter, add --unseen to measure on all of them"
    if not split.get("test_fraction"):
        raise CommandError(f"the adapter held out no test images (--test-split 0); {advice}")
    parts = split_images(conditions, split["test_fraction"], split["validation_fraction"], split["seed"])
    if split_counts(conditions, parts) != split.get("images"):
        raise CommandError(
            "this dataset is not the one the adapter was fitted on (its images per condition differ from the "
            f"adapter's record), so its test split cannot be found; {advice}"
        )
    test = tuple(image for image, part in zip(dataset.images, parts) if part == TEST)
    info = {"kind": "test", "images": len(test), "seed": split["seed"], "test_fraction": split["test_fraction"]}
    return dataclasses.replace(dataset, images=test), info


def _origin(runtime) -> str:
    overrides = runtime.config.get("BANK_OVERRIDES")
    origin = f"the {runtime.clinical_app.name} app's bank"
    return origin + (f", thresholds from {Path(overrides).name}" if overrides else "")


def _second_arm(args, first, load_bank):
    from ..evaluation.runner import Arm

    if args.compare_bank and not Path(args.compare_bank).expanduser().is_file():
        raise CommandError(f"--compare-bank {args.compare_bank} is not a file")
    bank = load_bank(Path(args.compare_bank).expanduser()) if args.compare_bank else first.bank
    wanted = args.compare_template_set or (first.template_set.id if first.template_set.id in {t.id for t in bank.template_sets} else None)
    try:
        template_set = bank.template_set(wanted)
    except KeyError:
        raise CommandError(
            f"bank '{bank.name}' has no template set {wanted!r}; it has: {', '.join(t.id for t in bank.template_sets)}"
        ) from None
    if bank is first.bank and template_set.id == first.template_set.id:
        raise CommandError("the comparison is the same bank and template set as arm A; name another")
    origin = f"file {Path(args.compare_bank).name}" if args.compare_bank else first.origin
    return Arm("B", bank, template_set, origin)


def _int8_arm(runtime, first):
    """Arm B of --compare-int8: a copy of the loaded weights with the frozen layers in int8 (the app's PRIVASCAN_INT8)."""
    from ..evaluation.runner import Arm

    int8_copy = getattr(runtime.classifier, "int8_copy", None)
    if int8_copy is None:
        raise CommandError(f"classifier {runtime.classifier.name} has no int8 mode")
    twin = int8_copy([(first.bank, first.template_set)])
    return Arm("B", first.bank, first.template_set, first.origin, classifier=twin, label="int8")


def _overrides_text(runtime, dataset, thresholds: dict | None, calibration: dict | None = None) -> str:
    fitted = {cid: row["threshold"] for cid, row in thresholds["conditions"].items()} if thresholds else {}
    split = thresholds or calibration
    comments = [
        "PrivaScan bank overrides, written by `privascan eval --fit-thresholds / --fit-calibration`.",
        "The app loads it from PRIVASCAN_BANK_OVERRIDES=<this file>; see docs/evaluation.md.",
        f"Fitted on {split['validation_images']} validation images of {dataset.source.name}, "
        f"template set '{runtime.template_set.id}'.",
    ]
    if calibration:
        held = calibration["held_out"]
        comments.append(
            f"temperature {calibration['temperature']}: held-out ECE {_short(held['before']['ece'])} before, "
            f"{_short(held['after']['ece'])} after ({held['before']['n']} images)."
        )
    for cid, row in (thresholds or {"conditions": {}})["conditions"].items():
        held = row["held_out"]
        comments.append(
            f"{cid}: target sensitivity {row['target_sensitivity']}; on {held['n']} held-out images "
            f"sensitivity {_short(held['sensitivity'])}, specificity {_short(held['specificity'])}."
        )
    text = format_overrides(runtime.bank.name, fitted, comments, calibration["temperature"] if calibration else None)
    with_thresholds(runtime.bank, tomllib.loads(text)["thresholds"])  # what the app will accept
    return text


def _out_of_scope(args, runtime) -> dict:
    """The scope gate's verdicts on a folder of pictures that are not this modality."""
    from ..evaluation.dataset import image_files
    from ..evaluation.runner import scope_verdicts

    folder = Path(args.out_of_scope).expanduser()
    if not folder.is_dir():
        raise CommandError(f"--out-of-scope {folder} is not a folder")
    files = image_files(folder)
    if not files:
        raise CommandError(f"--out-of-scope {folder} holds no JPEG, PNG, WebP or HEIC picture")
    return scope_verdicts(files, runtime.clinical_app, runtime.registry, runtime.template_set.id, runtime.config)


def _short(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _signed(second, first) -> str:
    return "n/a" if second is None or first is None else f"{second - first:+.3f}"


def _natural(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _print_summary(report: dict, json_path: Path, html_path: Path, overrides: str | None) -> None:
    data = report["dataset"]
    print(f"{data['analysed']} of {data['images']} images analysed ({len(data['skipped'])} skipped).")
    for arm in report["arms"]:
        m = arm["metrics"]
        print(
            f"arm {arm['key']} ({arm['description']}): balanced accuracy {_short(m['balanced_accuracy'])}, "
            f"melanoma AUROC {_short(m['melanoma_vs_rest_auroc'])}, macro AUROC {_short(m['macro_auroc'])}, "
            f"ECE {_short(m['ece'])}"
        )
    if report["settings"].get("compare_int8") and len(report["arms"]) == 2:
        fp32, int8 = (arm["metrics"] for arm in report["arms"])
        differences = ", ".join(
            f"{name} {_signed(int8[key], fp32[key])}"
            for key, name in (("balanced_accuracy", "balanced accuracy"), ("macro_auroc", "macro AUROC"),
                              ("melanoma_vs_rest_auroc", "melanoma AUROC"))
        )
        comparison = report["comparison"]
        total = sum(comparison[k] for k in ("both_correct", "only_first_correct", "only_second_correct", "both_wrong"))
        print(f"int8 minus fp32: {differences}; same top-1 on {comparison['same_prediction']} of {total} images "
              f"(McNemar p {_short(comparison['mcnemar_exact_p'])}). Keep fp32 (the default) unless int8 loses nothing "
              "that matters on your images.")
    if report["thresholds"]:
        for cid, row in report["thresholds"]["conditions"].items():
            held = row["held_out"]
            print(
                f"threshold {cid} = {row['threshold']}: held-out sensitivity {_short(held['sensitivity'])}, "
                f"specificity {_short(held['specificity'])}"
            )
    calibration = report.get("calibration")
    if calibration:
        held = calibration["held_out"]
        print(
            f"calibration: temperature {calibration['temperature']}, held-out ECE {_short(held['before']['ece'])} "
            f"before, {_short(held['after']['ece'])} after"
        )
    scope = report.get("out_of_scope")
    if scope:
        print(
            f"scope gate on {scope['images']} out-of-scope pictures: rejected {scope['rejected']}, "
            f"not judged {scope['not_judged']}, rejection rate {_short(scope['rejection_rate'])}"
        )
    print(f"report: {html_path} and {json_path}")
    if overrides:
        print(f"bank overrides: {overrides} (load with PRIVASCAN_BANK_OVERRIDES)")
    sys.stdout.flush()
