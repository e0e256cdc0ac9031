"""Printable reports (photo, lesion, session) and downloads (FHIR, CSV, JSON), all made in memory on request."""

from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import gettext as _

from .. import lesions as lesion_model
from ..fhir_export import ExportError, export_bundle
from ..lesions import LesionError
from ..local_time import user_now, zone_label
from ..sessions import current_data
from .common import page_context
from .results import comparison, report_item, session_summary

bp = Blueprint("reports", __name__)


def _data():
    data = current_data()
    if data is None or not data.photos:
        abort(409, description=_("This session holds no photo yet, so there is nothing to report or export. Add and analyse a photo first."))
    return data


def _photo(data, photo_id: str):
    photo = data.photos.get(photo_id)
    if photo is None:
        abort(404, description=_("That photo is not in your session (it may have been deleted, or your session ended)."))
    return photo


def _lesion(data, lesion_id: str):
    try:
        return lesion_model.get_lesion(data, lesion_id)
    except LesionError as exc:
        abort(exc.status, description=exc.message)


def _analysed(photos):
    return [photo for photo in photos if photo.state == "done" and photo.result is not None and photo.result.analysed]


def _stamp() -> str:
    return user_now().strftime("%Y%m%d-%H%M")


def _download(body: bytes | str, mimetype: str, filename: str) -> Response:
    # The file name is ours (date and kind), never a photo's name.
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- printable reports --------------------------------------------------------------------
def _report(title: str, photos, lesion=None, columns=None, summary=None):
    return render_template(
        "report.html", **page_context(), report_title=title, photos=photos, items=[report_item(p) for p in photos],
        lesion=lesion, columns=columns, summary=summary, generated=user_now(),
    )


@bp.get("/report/session")
def session_report():
    data = _data()
    summary = session_summary(data)
    return _report(_("Session report"), [photo for photo, _summary in summary.rows], summary=summary)


@bp.get("/report/photos/<photo_id>")
def photo_report(photo_id: str):
    data = _data()
    photo = _photo(data, photo_id)
    if not _analysed([photo]):
        abort(409, description=_("“%(name)s” has not been analysed yet, so there is no report. Analyse it first.", name=photo.name))
    return _report(_("Report: %(name)s", name=photo.name), [photo])


@bp.get("/report/lesions/<lesion_id>")
def lesion_report(lesion_id: str):
    data = _data()
    lesion = _lesion(data, lesion_id)
    photos = lesion_model.photos_in_date_order(data, lesion)
    return _report(_("Lesion report: %(name)s", name=lesion.name), photos, lesion=lesion, columns=comparison(data, lesion))


# -- FHIR ------------------------------------------------------------------------------------
def _fhir(photos, nothing_analysed: str) -> Response:
    analysed = _analysed(photos)
    if not analysed:
        abort(409, description=nothing_analysed)
    try:
        bundle = export_bundle([report_item(p) for p in analysed], include_crop=request.args.get("crop") == "1")
    except ExportError as exc:
        abort(exc.status, description=exc.message)
    return _download(json.dumps(bundle, ensure_ascii=False, indent=1), "application/fhir+json",
                     f"privascan-{_stamp()}.fhir.json")


@bp.get("/export/session.fhir.json")
def session_fhir():
    return _fhir(list(_data().photos.values()),
                 _("This session has no analysed photo yet, so there is nothing to export. Analyse a photo first."))


@bp.get("/export/photos/<photo_id>.fhir.json")
def photo_fhir(photo_id: str):
    data = _data()
    return _fhir([_photo(data, photo_id)],
                 _("This photo has not been analysed yet, so there is nothing to export. Analyse it first."))


@bp.get("/export/lesions/<lesion_id>.fhir.json")
def lesion_fhir(lesion_id: str):
    data = _data()
    return _fhir(lesion_model.photos_in_date_order(data, _lesion(data, lesion_id)),
                 _("This lesion has no analysed photo yet, so there is nothing to export. Analyse a photo first."))


# -- CSV and JSON of the session's results ----------------------------------------------------
COLUMNS = ("photo", "date_taken", "lesion", "body_site", "body_site_snomed_ct", "tier", "tier_label", "headline",
           "headline_snomed_ct", "headline_score", "high_risk_score", "confidence", "reliable", "second", "second_score",
           "third", "third_score", "quality", "skin_tone", "model", "bank", "template_set")


def result_rows(data) -> list[dict]:
    rows = []
    for photo, _summary in session_summary(data).rows:
        item = report_item(photo, data)
        summary = item.summary
        top = summary.top + [(None, None, False)] * (3 - len(summary.top))
        rows.append({
            "photo": photo.name,
            "date_taken": photo.taken_on.isoformat(),
            "lesion": item.lesion_name,
            "body_site": item.site.label if item.site else "",
            "body_site_snomed_ct": item.site.snomed_ct if item.site else "",
            "tier": summary.tier.id,
            "tier_label": summary.tier.label,
            "headline": summary.headline_label,
            "headline_snomed_ct": summary.headline_snomed_ct,
            "headline_score": round(summary.headline_probability, 4) if summary.analysed else "",
            "high_risk_score": round(summary.high_risk_probability, 4) if summary.analysed else "",
            "confidence": summary.confidence,
            "reliable": summary.reliable if summary.analysed else "",
            "second": top[1][0].label if top[1][0] else "",
            "second_score": round(top[1][1], 4) if top[1][0] else "",
            "third": top[2][0].label if top[2][0] else "",
            "third_score": round(top[2][1], 4) if top[2][0] else "",
            "quality": summary.quality_note,
            "skin_tone": summary.skin_tone_note,
            "model": item.provenance.model if item.provenance else "",
            "bank": item.provenance.bank_name if item.provenance else "",
            "template_set": item.template_set_label,
        })
    return rows


def _csv_cell(value):
    # A cell starting with = + - @ is a formula to a spreadsheet: photo names are user text.
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@bp.get("/export/session.csv")
def session_csv():
    rows = result_rows(_data())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    return _download(buffer.getvalue(), "text/csv", f"privascan-{_stamp()}.csv")


@bp.get("/export/session.json")
def session_json():
    data = _data()
    body = {
        "generated": user_now().isoformat(timespec="seconds"),
        "time_zone": zone_label(),
        "photos": result_rows(data),
        "lesions": [
            {"name": lesion.name, "body_site": lesion.site.label if lesion.site else "",
             "body_site_snomed_ct": lesion.site.snomed_ct if lesion.site else "",
             "photos": [data.photos[pid].name for pid in lesion.photo_ids if pid in data.photos]}
            for lesion in data.lesions.values()
        ],
        "note": "Triage aid output, not a diagnosis. Scores are relative among the bank's conditions.",
    }
    return _download(json.dumps(body, ensure_ascii=False, indent=1), "application/json", f"privascan-{_stamp()}.json")
