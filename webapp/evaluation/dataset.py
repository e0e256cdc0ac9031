"""Labelled images for evaluation, and how their labels map to a bank's conditions.

Two layouts are read:

- an image folder with one subfolder per label (``DATASET/mel/0001.jpg``);
  images may sit deeper inside a label's folder;
- a CSV file with a header row naming at least ``path`` and ``label`` (paths
  relative to the CSV's folder or absolute), optionally more columns such as
  ``fitzpatrick`` that ``--subgroup-column`` picks; a CSV without a header is
  read as ``path,label[,subgroup]``.

Dataset labels are whatever the dataset uses (HAM10000 says ``mel``, ``nv``,
``bkl``); a mapping names the bank condition each one means. A label that is
already a condition id of the bank maps to itself; any other unmapped label is
an error, so no image is silently dropped or mislabelled.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..interfaces import PromptBank

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
MISSING_SUBGROUP = "(missing)"


class DatasetError(ValueError):
    """A dataset or mapping that cannot be evaluated, with a message saying what to fix."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path  # where to read it
    name: str  # how the report names it: relative to the dataset
    label: str  # the dataset's own label
    subgroup: str | None = None


@dataclass(frozen=True)
class Dataset:
    source: Path
    kind: str  # "folder" or "csv"
    images: tuple[LabelledImage, ...]
    subgroup_column: str | None = None

    @property
    def labels(self) -> list[str]:
        return sorted({image.label for image in self.images})


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, hidden files and folders skipped, in a stable order."""
    return sorted(
        p for p in folder.rglob("*")
        if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_dataset(source: str | Path, subgroup_column: str | None = None) -> Dataset:
    source = Path(source).expanduser()
    if source.is_dir():
        if subgroup_column:
            raise DatasetError(
                "--subgroup-column needs a CSV dataset (path,label,<subgroup column>); an image folder has only labels."
            )
        return _load_folder(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _load_csv(source, subgroup_column)
    if source.exists():
        raise DatasetError(f"{source} is neither a folder of labelled images nor a .csv file.")
    raise DatasetError(f"{source} does not exist.")


def _load_folder(root: Path) -> Dataset:
    images = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in image_files(label_dir):
            images.append(LabelledImage(path, path.relative_to(root).as_posix(), label_dir.name))
    stray = [p.name for p in root.iterdir() if is_image_file(p)]
    if stray:
        raise DatasetError(
            f"{root} has images directly inside it ({', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}); "
            "put each image in a subfolder named after its label."
        )
    if not images:
        raise DatasetError(f"{root} holds no images in label subfolders (DATASET/<label>/<image>).")
    return Dataset(root, "folder", tuple(images))


def _load_csv(path: Path, subgroup_column: str | None) -> Dataset:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    rows = [row for row in rows if not row[0].lstrip().startswith("#")]
    if not rows:
        raise DatasetError(f"{path.name} is empty.")
    first = [cell.strip() for cell in rows[0]]
    if "path" in first and "label" in first:
        header, body, first_line = first, rows[1:], 2
    else:
        header, body, first_line = ["path", "label", "subgroup"][: max(2, len(first))], rows, 1
        if len(first) > 3:
            raise DatasetError(
                f"{path.name}: without a header row the columns must be path,label[,subgroup]; "
                "add a header row naming the columns (at least 'path' and 'label')."
            )
    if subgroup_column and subgroup_column not in header:
        raise DatasetError(
            f"{path.name} has no column {subgroup_column!r} (columns: {', '.join(header)})."
        )
    column = {name: position for position, name in enumerate(header)}
    images, missing = [], []
    for line, row in enumerate(body, start=first_line):
        cells = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        raw_path, label = cells[column["path"]], cells[column["label"]]
        if not raw_path or not label:
            raise DatasetError(f"{path.name} line {line}: needs a path and a label.")
        image_path = Path(raw_path).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if not image_path.is_file():
            missing.append(raw_path)
            continue
        subgroup = None
        if subgroup_column:
            subgroup = cells[column[subgroup_column]] or MISSING_SUBGROUP
        images.append(LabelledImage(image_path, raw_path, label, subgroup))
    if missing:
        raise DatasetError(
            f"{path.name}: {len(missing)} image file(s) not found, e.g. {', '.join(missing[:3])} "
            "(relative paths are read from the CSV's folder)."
        )
    if not images:
        raise DatasetError(f"{path.name} lists no images.")
    return Dataset(path, "csv", tuple(images), subgroup_column)


def parse_map_arguments(values: Iterable[str]) -> dict[str, str]:
    """``["mel=melanoma", "nv=melanocytic_nevus"]`` -> a dict; one label given twice is an error."""
    mapping: dict[str, str] = {}
    for value in values:
        label, sep, condition = value.partition("=")
        if not sep or not label.strip() or not condition.strip():
            raise DatasetError(f"--map {value!r}: write DATASET_LABEL=CONDITION_ID, e.g. mel=melanoma.")
        _add(mapping, label.strip(), condition.strip(), f"--map {value}")
    return mapping


def load_map_file(path: str | Path) -> dict[str, str]:
    """A mapping file: TOML (``mel = "melanoma"``, top level or under ``[map]``) or CSV rows ``label,condition``.

    In a CSV, lines starting with ``#`` are comments and a first row
    ``label,condition`` (or ``dataset_label,condition_id``) is a header.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"--map-file {path} does not exist.")
    mapping: dict[str, str] = {}
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path.name}: not valid TOML ({exc}).") from exc
        table = data.get("map", data) if isinstance(data.get("map"), dict) else data
        for label, condition in table.items():
            if not isinstance(condition, str) or not condition.strip():
                raise DatasetError(f"{path.name}: {label} must map to a condition id string, got {condition!r}.")
            _add(mapping, label, condition.strip(), path.name)
    elif path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [r for r in csv.reader(handle) if r and r[0].strip() and not r[0].lstrip().startswith("#")]
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["label", "condition"], ["dataset_label", "condition_id"]):
            rows = rows[1:]
        for row in rows:
            if len(row) < 2 or not row[1].strip():
                raise DatasetError(f"{path.name}: each row must be label,condition (got {','.join(row)!r}).")
            _add(mapping, row[0].strip(), row[1].strip(), path.name)
    else:
        raise DatasetError(f"--map-file must be a .toml or .csv file, got {path.name}.")
    if not mapping:
        raise DatasetError(f"{path.name} maps no label.")
    return mapping


def _add(mapping: dict[str, str], label: str, condition: str, where: str) -> None:
    if label in mapping and mapping[label] != condition:
        raise DatasetError(f"{where}: label {label!r} is mapped twice ({mapping[label]} and {condition}).")
    mapping[label] = condition


def resolve_mapping(labels: Iterable[str], mapping: dict[str, str], banks: Iterable[PromptBank]) -> dict[str, str]:
    """Every dataset label -> a condition id present in every bank, or a ``DatasetError`` naming the problem."""
    banks = list(banks)
    resolved: dict[str, str] = {}
    unmapped: list[str] = []
    for label in sorted(set(labels)):
        if label in mapping:
            resolved[label] = mapping[label]
        elif all(_has(bank, label) for bank in banks):
            resolved[label] = label  # already a condition id
        else:
            unmapped.append(label)
    if unmapped:
        known = ", ".join(c.id for c in banks[0].conditions)
        raise DatasetError(
            f"dataset label(s) {', '.join(unmapped)} are not mapped to a condition. Map each with "
            f"--map LABEL=CONDITION_ID (or --map-file). Conditions of bank '{banks[0].name}': {known}."
        )
    for bank in banks:
        unknown = sorted({c for c in resolved.values() if not _has(bank, c)})
        if unknown:
            raise DatasetError(
                f"the mapping names condition(s) {', '.join(unknown)} that bank '{bank.name}' does not have "
                f"(its conditions: {', '.join(c.id for c in bank.conditions)})."
            )
    return resolved


def _has(bank: PromptBank, condition_id: str) -> bool:
    return any(condition.id == condition_id for condition in bank.conditions)
