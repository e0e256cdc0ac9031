"""privascan analyze PATH...: analyse photos in a batch, as CSV or JSON.

Each photo goes through the app's own pipeline (safe decode, localize, crop,
classify, interpret; with --explain also Grad-CAM). Results go to stdout
or to the one file named with --output, one row (CSV) or object (JSON)
per photo, written as they come. Nothing else is written anywhere.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from .loading import CommandError, Progress, add_model_arguments, load_runtime, reports_errors

TOP = 3
COLUMNS = (
    ["path", "status", "headline", "headline_id", "risk", "confidence"]
    + [f"top{i}{suffix}" for i in range(1, TOP + 1) for suffix in ("", "_probability")]
    + ["lesion_box", "localizer", "notes", "adapter"]
    + ["tier", "assessable", "low_quality", "quality_passed", "failed_checks", "in_scope", "scope_score",
       "skin_tone_band", "calibrated"]
)
EXPLAIN_COLUMNS = ["reasoning", "heatmap_condition", "heatmap"]


def add_parser(subparsers) -> None:
    # The subcommand is the word the interface shows ("Analyze"); identifiers in
    # the code spell it "analyse".
    parser = subparsers.add_parser(
        "analyze",
        help="analyse photos in a batch (CSV or JSON to stdout or a file)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photo files, or folders searched for photos")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--explain", action="store_true",
                        help="add the reasoning and a Grad-CAM heatmap (PNG data URL) for the top condition")
    parser.add_argument("--analyse-anyway", action="store_true",
                        help="run the model on photos that fail the quality gate (marked low_quality, not assessable)")
    add_model_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def photo_paths(arguments: list[str]) -> list[Path]:
    from ..evaluation.dataset import image_files

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise CommandError(f"{argument}: no photos in this folder")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise CommandError(f"{argument}: no such file or folder")
    return paths


@reports_errors("analyze")
def run(args: argparse.Namespace) -> int:
    paths = photo_paths(args.paths)
    output = Path(args.output).expanduser() if args.output else None
    if output is not None and output.is_dir():
        raise CommandError(f"--output {output} is a folder; name a file")
    runtime = load_runtime(args)
    from ..adapter import install_adapter

    install_adapter(runtime.registry, runtime.config)  # PRIVASCAN_ADAPTER, refused if it does not match, as the app does
    runtime.load_models(explain=args.explain, quiet=args.quiet)
    progress = Progress(len(paths), "analysing", args.quiet)
    columns = COLUMNS + (EXPLAIN_COLUMNS if args.explain else [])
    with _opened(output) as stream:
        writer = _CsvWriter(stream, columns) if args.format == "csv" else _JsonWriter(stream)
        try:
            for path in paths:
                writer.write(_analyse_one(path, runtime, args.explain, args.analyse_anyway))
                progress.step()
        finally:
            progress.close()
            writer.close()
    return 0


def _analyse_one(path: Path, runtime, explain: bool, analyse_anyway: bool = False) -> dict:
    from ..images import ImageRejected, safe_decode
    from ..pipeline import analyse_image

    try:
        decoded = safe_decode(path.read_bytes(), runtime.config["MAX_IMAGE_PIXELS"])
    except ImageRejected as exc:
        return _failed(path, exc.message)
    except OSError as exc:
        return _failed(path, f"could not be read ({exc.strerror or type(exc).__name__})")
    result = analyse_image(decoded.image, runtime.clinical_app, runtime.registry, runtime.template_set.id, explain,
                           analyse_anyway=analyse_anyway, demo=bool(runtime.config.get("DEMO_MODEL")))
    return _record(path, result, runtime, explain)


@contextmanager
def _opened(output: Path | None):
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        stream = output.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def _failed(path: Path, reason: str) -> dict:
    return {"path": str(path), "analysed": False, "status": "rejected", "headline": None, "risk": "unknown",
            "confidence": "not analysed", "top": [], "lesion_box": None, "localizer": None, "notes": [reason],
            "adapter": None,
            "tier": "cant_assess", "assessable": False, "low_quality": False, "quality": None, "scope": None,
            "skin_tone": None, "calibrated": False}


def _record(path: Path, result, runtime, explain: bool) -> dict:
    from ..gate_fields import gate_fields
    from ..pipeline import read

    record = {
        "path": str(path),
        "analysed": result.analysed,
        "status": "analysed" if result.analysed else "not analysed",
        "headline": None,
        "risk": "unknown",
        "confidence": "not analysed",
        "top": [],
        "lesion_box": result.detection.box.as_list() if result.detection else None,
        "localizer": result.detection.method if result.detection else None,
        "notes": list(result.notes),
        "adapter": result.adapter,  # the clinic's adapter that scored it, or None (zero-shot)
    }
    record.update(gate_fields(result, runtime.bank))
    if result.analysed:
        reading = read(result, runtime.bank)
        record.update(gate_fields(result, runtime.bank, reading))
        record.update(
            headline={"id": reading.headline.id, "label": reading.headline.label},
            risk=reading.risk,
            confidence=reading.confidence,
            top=[
                {"id": item.condition.id, "label": item.condition.label, "probability": round(item.probability, 6)}
                for item in reading.ranking[:TOP]
            ],
        )
        if explain:
            record["reasoning"] = reading.steps
    if explain:
        record["heatmap_condition"] = result.heatmap_condition_id or None
        record["heatmap"] = (
            "data:image/png;base64," + base64.b64encode(result.heatmap_png).decode("ascii") if result.heatmap_png else None
        )
    return record


class _JsonWriter:
    """A JSON array written one object at a time, so a long batch never sits in memory."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def write(self, record: dict) -> None:
        self.stream.write(("[\n" if self.count == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")


class _CsvWriter:
    def __init__(self, stream, columns: list[str]):
        self.stream = stream
        self.columns = columns
        self.writer = csv.writer(stream)
        self.writer.writerow(columns)

    def write(self, record: dict) -> None:
        row = {
            "path": record["path"],
            "status": record["status"],
            "headline": record["headline"]["label"] if record["headline"] else "",
            "headline_id": record["headline"]["id"] if record["headline"] else "",
            "risk": record["risk"],
            "confidence": record["confidence"],
            "lesion_box": " ".join(str(v) for v in record["lesion_box"]) if record["lesion_box"] else "",
            "localizer": record["localizer"] or "",
            "notes": " | ".join(record["notes"]),
            "adapter": record["adapter"]["id"] if record.get("adapter") else "",
            "reasoning": " ".join(record.get("reasoning", [])),
            "heatmap_condition": record.get("heatmap_condition") or "",
            "heatmap": record.get("heatmap") or "",
            "tier": record["tier"],
            "assessable": str(record["assessable"]).lower(),
            "low_quality": str(record["low_quality"]).lower(),
            "quality_passed": "" if not record["quality"] else str(record["quality"]["passed"]).lower(),
            "failed_checks": " ".join(c["name"] for c in (record["quality"] or {}).get("checks", []) if not c["passed"]),
            "in_scope": "" if not record["scope"] or record["scope"]["in_scope"] is None else str(record["scope"]["in_scope"]).lower(),
            "scope_score": "" if not record["scope"] or record["scope"]["score"] is None else f"{record['scope']['score']:.4f}",
            "skin_tone_band": record["skin_tone"]["band"] if record["skin_tone"] else "",
            "calibrated": str(record["calibrated"]).lower(),
        }
        for i in range(1, TOP + 1):
            item = record["top"][i - 1] if len(record["top"]) >= i else None
            row[f"top{i}"] = item["id"] if item else ""
            row[f"top{i}_probability"] = f"{item['probability']:.6f}" if item else ""
        self.writer.writerow([_cell(row[column]) for column in self.columns])
        self.stream.flush()

    def close(self) -> None:
        pass


def _cell(text: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: defuse it (a file name can start so).
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
