"""The JSON API for clinic systems: one image in, one result out, nothing kept."""

from __future__ import annotations

import base64
import json

from flask import Blueprint, abort, current_app, request

from ..jobs import NotReady, QueueFull, WorkerTimeout, analyse_once
from ..decoding import decoding
from ..images import ImageRejected
from ..store import StoreFull
from ..gate_fields import gate_fields
from ..pipeline import read
from ..fhir_export import ReportItem, export_bundle
from ..result_summary import summarise
from .common import bank_for
from .results import provenance_of

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.post("/analyze")
def analyse():
    settings = _settings_from_query()
    upload = request.files.get("image")
    if upload is None:
        abort(400, description="Send one image in the multipart field 'image'.")
    max_bytes = current_app.config["MAX_FILE_BYTES"]
    raw = upload.read(max_bytes + 1)
    if len(raw) > max_bytes:
        abort(413, description=f"The image is larger than the {max_bytes // (1024 * 1024)} MB allowed.")
    try:
        with decoding(raw, None, current_app.config["MAX_IMAGE_PIXELS"]) as decoded:
            image, original_size = decoded.image, decoded.original_size
            del decoded
    except (ImageRejected, StoreFull) as exc:
        abort(exc.status, description=exc.message)
    del raw
    explain = request.args.get("explain") in {"1", "true", "yes"}
    as_fhir = request.args.get("fhir") in {"1", "true", "yes"}
    anyway = request.args.get("analyse_anyway") in {"1", "true", "yes"}
    store = current_app.extensions["privascan_store"]
    try:
        # The image waits in the queue: its pixels count in the server's memory cap until the answer.
        with store.reserve(None, image.width * image.height * 4, "Analysing this image"):
            clinical_app, result = analyse_once(
                image, settings, explain, float(current_app.config["API_TIMEOUT"]), analyse_anyway=anyway
            )
    except (NotReady, QueueFull, WorkerTimeout) as exc:
        abort(503, description=exc.message)
    except StoreFull as exc:
        abort(exc.status, description=exc.message)
    finally:
        del image  # the image lives on only inside the job, which drops it
    if as_fhir:
        return fhir_json(clinical_app, result)
    return result_json(clinical_app, result, explain, original_size)


@bp.get("/openapi.json")
def openapi():
    """This API as an OpenAPI 3.1 document (webapp/openapi.py)."""
    from ..openapi import openapi_document

    return openapi_document(keys_required=bool(current_app.config.get("API_KEY_HASHES")))


def fhir_json(clinical_app, result):
    """``fhir=1``: the result as a FHIR R4 Bundle (DiagnosticReport, Observations, Devices, Provenance)."""
    if not result.analysed:
        abort(422, description=" ".join(result.notes) or "The image could not be analysed, so there is no report.")
    bank = bank_for(clinical_app)
    reading = read(result, bank)
    thresholds = {c.id: c.alert_threshold for c in bank.conditions}
    item = ReportItem(
        title="API image", taken_on=None, result=result, reading=reading,
        summary=summarise(result, reading, bank, thresholds), thresholds=thresholds,
        provenance=provenance_of(result), template_set_label=bank.template_set(result.template_set_id).label,
        crop_jpeg=result.crop_jpeg,
    )
    bundle = export_bundle([item], include_crop=request.args.get("crop") == "1")
    return current_app.response_class(json.dumps(bundle, ensure_ascii=False), mimetype="application/fhir+json")


def _settings_from_query() -> dict:
    """``app`` and ``template_set`` from the query; a name that does not exist is a 400, never a silent default."""
    registry = current_app.extensions["privascan_registry"]
    settings = {key: request.args[key] for key in ("app", "template_set") if request.args.get(key)}
    adapter = request.args.get("adapter", "1").strip().lower()
    if adapter not in {"0", "1", "false", "true", "no", "yes", "off", "on"}:
        abort(400, description="adapter must be 1 (use the clinic's adapter when one is installed, the default) or 0.")
    if adapter in {"0", "false", "no", "off"}:
        settings["adapter_off"] = True
    if "app" in settings and settings["app"] not in registry.apps:
        abort(400, description=f"Unknown app {settings['app']!r}; this server has: {', '.join(registry.apps)}.")
    bank = bank_for(registry.app(settings.get("app") or current_app.config["CLINICAL_APP"]))
    known = [t.id for t in bank.template_sets]
    if "template_set" in settings and settings["template_set"] not in known:
        abort(400, description=f"Unknown template_set {settings['template_set']!r} for {bank.name}; use one of: {', '.join(known)}.")
    return settings


def _in_original_pixels(box: list[int], analysed: tuple[int, int], original: tuple[int, int]) -> list[int]:
    """A box found on the image shrunk to WORKING_MAX_SIDE, in the pixels of the image as sent."""
    sx, sy = original[0] / analysed[0], original[1] / analysed[1]
    x0, y0, x1, y1 = box
    return [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]


def result_json(clinical_app, result, explain: bool, original_size: tuple[int, int] | None = None) -> dict:
    size = tuple(original_size or result.image_size)
    box = result.detection.box.as_list() if result.detection else None
    if box is not None and size != tuple(result.image_size):
        box = _in_original_pixels(box, result.image_size, size)
    body = {
        "app": clinical_app.name,
        "template_set": result.template_set_id,
        "image_size": list(size),
        "lesion_box": box,
        "localizer": result.detection.method if result.detection else None,
        "notes": result.notes,
        # Which scorer answered: the clinic's adapter ({id, method, conditions, fitted_at, template_set}) or null (zero-shot).
        "adapter": result.adapter,
        "timings": result.timings,
        "conditions": [],
        "headline": None,
        "risk": "unknown",
        "confidence": "not analysed",
    }
    bank = bank_for(clinical_app)
    body.update(gate_fields(result, bank))
    if not result.analysed:
        return body
    reading = read(result, bank)
    body.update(gate_fields(result, bank, reading))
    body.update(
        conditions=[
            {
                "id": item.condition.id,
                "label": item.condition.label,
                "probability": round(float(item.probability), 6),
                "groups": list(item.condition.groups),
                "snomed_ct": item.condition.snomed_ct,
                "icd10": item.condition.icd10,
            }
            for item in reading.ranking
        ],
        # Advice only where the triage allows it: never for a result that is not assessable or unclear.
        headline={
            "id": reading.headline.id,
            "label": reading.headline.label,
            "summary": reading.headline.summary if reading.triage.show_advice else "",
        },
        risk=reading.risk,
        confidence=reading.confidence,
        margin=round(reading.margin, 6),
        entropy_bits=round(reading.entropy_bits, 6),
        reliable=reading.reliable,
        not_clear=reading.not_clear,
    )
    if explain and result.heatmap_png:
        body["heatmap"] = "data:image/png;base64," + base64.b64encode(result.heatmap_png).decode("ascii")
        body["heatmap_condition"] = result.heatmap_condition_id
    return body
