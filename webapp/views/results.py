"""Stored results as the summary, comparison, reports and exports present them (no routes here).

The templates reach these through a context processor (``init_context``), so
the timeline's summary and each card's lesion panel need nothing from the
views that render them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .. import lesions as lesion_model
from ..bank_i18n import localized_app
from ..body_sites import BODY_SITES
from ..fhir_export import Provenance, ReportItem
from ..lesion_metrics import ChangeThresholds, compare, measure_region
from ..live import effective_thresholds
from ..pipeline import read
from ..result_summary import ResultSummary, not_analysed_summary, summarise
from ..sessions import current_data
from .common import bank_for, rules_for, settings


def _registry():
    return current_app.extensions["privascan_registry"]


def similarity_threshold() -> float:
    return float(current_app.config.get("SAME_LESION_SIMILARITY", lesion_model.SAME_LESION_SIMILARITY))


def change_thresholds() -> ChangeThresholds:
    return ChangeThresholds(embedding_distance=round(1.0 - similarity_threshold(), 6))


def reading_of(photo):
    result = photo.result
    if result is None or not result.analysed:
        return None
    bank = bank_for(_registry().app(result.app_name))
    return read(result, bank, rules_for(bank))


def summary_of(photo) -> ResultSummary:
    result = photo.result
    if photo.state != "done" or result is None:
        return not_analysed_summary(photo.state)
    bank = bank_for(_registry().app(result.app_name))
    thresholds = effective_thresholds(bank, settings().get("thresholds"))
    return summarise(result, reading_of(photo), bank, thresholds)


def provenance_of(result) -> Provenance:
    registry = _registry()
    clinical_app = localized_app(registry.app(result.app_name))
    bank = bank_for(clinical_app)
    classifier = registry.classifiers[clinical_app.classifier]
    return Provenance(
        model=classifier.describe(),
        classifier_name=classifier.name,
        bank_name=bank.name,
        bank_title=bank.title,
        bank_hash=bank.content_hash,
        app_title=clinical_app.title,
        disclaimer=clinical_app.disclaimer,
    )


def report_item(photo, data=None) -> ReportItem:
    data = data if data is not None else current_data()
    result = photo.result
    lesion = lesion_model.lesion_of(data, photo.id) if data is not None else None
    bank = bank_for(_registry().app(result.app_name)) if result is not None else None
    return ReportItem(
        title=photo.name,
        taken_on=photo.taken_on,
        result=result,
        reading=reading_of(photo),
        summary=summary_of(photo),
        thresholds=effective_thresholds(bank, settings().get("thresholds")) if bank else {},
        provenance=provenance_of(result) if result is not None and result.analysed else None,
        site=lesion.site if lesion else None,
        lesion_name=lesion.name if lesion else "",
        template_set_label=bank.template_set(result.template_set_id).label if result is not None and bank else "",
        crop_jpeg=result.crop_jpeg if result is not None else b"",
    )


def worst_first(photos) -> list[tuple[object, ResultSummary]]:
    rows = [(photo, summary_of(photo)) for photo in photos]
    # Worst tier first; within a tier the higher high-risk score first, then the newer photo.
    rows.sort(key=lambda row: (row[1].tier.rank, -row[1].high_risk_probability, -row[0].taken_on.toordinal()))
    return rows


@dataclass
class SessionSummary:
    rows: list  # (photo, summary), worst first
    counts: list  # (Tier, count), worst tier first

    @property
    def total(self) -> int:
        return len(self.rows)


def session_summary(data=None) -> SessionSummary:
    data = data if data is not None else current_data()
    rows = worst_first(data.photos.values()) if data else []
    counts: dict[str, list] = {}
    for _, summary in rows:
        counts.setdefault(summary.tier.id, [summary.tier, 0])[1] += 1
    return SessionSummary(rows, sorted((tuple(v) for v in counts.values()), key=lambda tc: tc[0].rank))


@dataclass
class ComparisonColumn:
    photo: object
    summary: ResultSummary
    region: object  # RegionMeasure | None
    change: object = None  # Change from the previous column, None for the first


def comparison(data, lesion) -> list[ComparisonColumn]:
    columns: list[ComparisonColumn] = []
    thresholds = change_thresholds()
    previous = None
    for photo in lesion_model.photos_in_date_order(data, lesion):
        summary = summary_of(photo)
        region = measure_region(photo.result) if summary.analysed else None
        point = {
            "taken_on": photo.taken_on,
            "high_risk": summary.high_risk_probability if summary.analysed else None,
            "embedding": lesion_model.embedding_of(photo),
            "region": region,
        }
        column = ComparisonColumn(photo, summary, region)
        if previous is not None:
            column.change = compare(previous, point, thresholds)
        columns.append(column)
        previous = point
    return columns


def init_context(app) -> None:
    @app.context_processor
    def lesion_context():
        data = current_data()
        return {
            "body_sites": BODY_SITES,
            "lesion_of": (lambda photo: lesion_model.lesion_of(data, photo.id)) if data else (lambda photo: None),
            "lesions_in_session": list(data.lesions.values()) if data else [],
            "suggestion_for": (lambda photo: lesion_model.suggest(data, photo, similarity_threshold())) if data else (lambda photo: None),
            "photo_by_id": (lambda photo_id: data.photos.get(photo_id)) if data else (lambda photo_id: None),
            "session_summary": session_summary,
            "summary_of": summary_of,
        }
