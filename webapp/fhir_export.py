"""FHIR R4 export of results, made in memory on request: a Bundle per photo or per session.

Each analysed photo becomes a ``DiagnosticReport`` (status ``preliminary``: a
triage aid's output, never a final diagnosis) whose conclusion says the tier
and headline in words and whose ``conclusionCode`` is the headline
condition's SNOMED CT code; one ``Observation`` per reported condition (its
code, the score as a ``valueQuantity`` in %, and an interpretation against the
condition's alert threshold); the model and the prompt bank as ``Device``
resources named by the observations; and a ``Provenance`` that records that
those devices produced the reports. ``include_crop`` adds the analysed crop
as a ``Media`` resource (base64 JPEG) linked from the report.

Resources are built as plain dicts and passed through the ``fhir.resources``
models (package R4B, FHIR 4.3: the technical-correction release of R4 4.0.1;
every element used here is the same in R4), which validates them: an export
that does not validate is an error, never a download. No patient: PrivaScan
knows no one's identity, so ``subject`` is left out.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass

from fhir.resources.R4B.bundle import Bundle

from .body_sites import SNOMED_CT, BodySite
from .result_summary import ResultSummary

ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REPORT_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
LOCAL_CONDITIONS = "urn:privascan:condition"  # a bank's own condition id, when it has no SNOMED CT code
LOCAL_TIERS = "urn:privascan:tier"


class ExportError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class ReportItem:
    """What one report needs, gathered by the view (no Flask objects)."""

    title: str  # "Photo 3" or the photo's name
    taken_on: dt.date | None
    result: object  # webapp.pipeline.AnalysisResult
    reading: object  # webapp.interpret.Interpretation
    summary: ResultSummary
    thresholds: dict[str, float]
    provenance: "Provenance | None" = None
    site: BodySite | None = None
    lesion_name: str = ""
    template_set_label: str = ""
    crop_jpeg: bytes = b""


@dataclass(frozen=True)
class Provenance:
    """Which model, bank and picture kind produced the results."""

    model: str  # classifier.describe()
    classifier_name: str
    bank_name: str
    bank_title: str
    bank_hash: str
    app_title: str
    disclaimer: str


def _uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _condition_code(condition) -> dict:
    codings = []
    if condition.snomed_ct:
        codings.append({"system": SNOMED_CT, "code": condition.snomed_ct, "display": condition.label})
    if condition.icd10:
        codings.append({"system": ICD10, "code": condition.icd10})
    codings.append({"system": LOCAL_CONDITIONS, "code": condition.id, "display": condition.label})
    return {"coding": codings, "text": condition.label}


def _body_site(site: BodySite | None) -> dict | None:
    if site is None:
        return None
    return {"coding": [{"system": SNOMED_CT, "code": site.snomed_ct, "display": site.display}], "text": site.label}


class _BundleBuilder:
    def __init__(self, now: dt.datetime):
        self.entries: list[dict] = []
        self.now = now.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
        self.devices: dict[Provenance, tuple[str, str]] = {}
        self.targets: list[str] = []

    def devices_for(self, provenance: Provenance) -> tuple[str, str]:
        """(model Device url, bank Device url), one pair per model and bank in the bundle."""
        if provenance not in self.devices:
            model_url = self._add(
                {
                    "resourceType": "Device",
                    "status": "active",
                    "deviceName": [{"name": provenance.model, "type": "model-name"}],
                    "type": {"text": f"AI image classifier ({provenance.classifier_name}), used zero-shot"},
                    "note": [{"text": provenance.disclaimer}],
                }
            )
            bank_url = self._add(
                {
                    "resourceType": "Device",
                    "status": "active",
                    "deviceName": [{"name": f"PrivaScan prompt bank {provenance.bank_name}: {provenance.bank_title}",
                                    "type": "user-friendly-name"}],
                    "type": {"text": "Prompt bank (the condition descriptions the classifier scores against)"},
                    "version": [{"type": {"text": "content hash"}, "value": provenance.bank_hash or "unversioned"}],
                }
            )
            self.devices[provenance] = (model_url, bank_url)
        return self.devices[provenance]

    def _add(self, resource: dict) -> str:
        resource = {key: value for key, value in resource.items() if value not in (None, [])}
        url = _uuid()
        self.entries.append({"fullUrl": url, "resource": resource})
        return url

    def add_report(self, item: ReportItem, include_crop: bool = False) -> str:
        summary, reading, provenance = item.summary, item.reading, item.provenance
        model_url, _ = self.devices_for(provenance)
        if not summary.analysed:
            raise ExportError(f"“{item.title}” has not been analysed yet, so there is nothing to export.", 409)
        site = _body_site(item.site)
        effective = item.taken_on.isoformat() if item.taken_on else None
        observation_urls = []
        for ranked in reading.ranking:
            condition, probability = ranked.condition, float(ranked.probability)
            threshold = item.thresholds.get(condition.id, condition.alert_threshold)
            above = probability >= threshold
            observation_urls.append(
                self._add(
                    {
                        "resourceType": "Observation",
                        "status": "preliminary",
                        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
                        "code": _condition_code(condition),
                        "effectiveDateTime": effective,
                        "issued": self.now,
                        "valueQuantity": {"value": round(probability * 100, 2), "unit": "%", "system": UCUM, "code": "%"},
                        "interpretation": [
                            {
                                "coding": [{"system": INTERPRETATION, "code": "H" if above else "L",
                                            "display": "High" if above else "Low"}],
                                "text": f"{'At or above' if above else 'Below'} PrivaScan's alert threshold of "
                                        f"{threshold * 100:.0f} % for {condition.label}",
                            }
                        ],
                        "bodySite": site,
                        "method": {"text": f"Zero-shot score among {len(reading.ranking)} conditions of the bank "
                                           f"'{provenance.bank_name}' ({item.template_set_label}); a relative score, "
                                           "not a probability of disease"},
                        "device": {"reference": model_url},
                        "note": [{"text": "Triage aid output; not a diagnosis."}],
                    }
                )
            )
        media_urls = []
        if include_crop and item.crop_jpeg:
            media_urls.append(
                self._add(
                    {
                        "resourceType": "Media",
                        "status": "completed",
                        "content": {"contentType": "image/jpeg", "data": base64.b64encode(item.crop_jpeg).decode("ascii"),
                                    "title": "The square crop the model analysed"},
                        "bodySite": site,
                        "device": {"reference": model_url},
                    }
                )
            )
        conclusion = self.conclusion(item)
        head = reading.headline
        conclusion_codes = [{"coding": [{"system": SNOMED_CT, "code": head.snomed_ct, "display": head.label}], "text": head.label}] if head.snomed_ct else [{"text": head.label}]
        conclusion_codes.append({"coding": [{"system": LOCAL_TIERS, "code": summary.tier.id, "display": summary.tier.label}],
                                 "text": summary.tier.label})
        report_url = self._add(
            {
                "resourceType": "DiagnosticReport",
                "status": "preliminary",
                "category": [{"coding": [{"system": REPORT_CATEGORY, "code": "OTH", "display": "Other"}],
                              "text": provenance.app_title}],
                "code": {"text": f"PrivaScan {provenance.app_title}: photo triage (AI, preliminary)"},
                "effectiveDateTime": effective,
                "issued": self.now,
                "result": [{"reference": url} for url in observation_urls],
                "media": [{"comment": "Analysed crop", "link": {"reference": url}} for url in media_urls],
                "conclusion": conclusion,
                "conclusionCode": conclusion_codes,
            }
        )
        self.targets.extend([report_url, *observation_urls, *media_urls])
        return report_url

    def conclusion(self, item: ReportItem) -> str:
        summary = item.summary
        where = f" ({item.lesion_name}{', ' + item.site.label if item.site else ''})" if item.lesion_name else (
            f" ({item.site.label})" if item.site else "")
        return (
            f"{summary.tier.label}{where}. Closest match: {summary.headline_label} "
            f"({summary.headline_probability * 100:.0f} %), confidence {summary.confidence}; high-risk conditions "
            f"together {summary.high_risk_probability * 100:.0f} %. {summary.quality_note}"
            f"{' ' + summary.skin_tone_note if summary.skin_tone_note else ''} {item.provenance.disclaimer}"
        ).strip()

    def finish(self) -> dict:
        for provenance, (model_url, bank_url) in self.devices.items():
            self._add(
                {
                    "resourceType": "Provenance",
                    "target": [{"reference": url} for url in self.targets],
                    "recorded": self.now,
                    "activity": {"text": "Zero-shot AI triage of a photo, made on request and not stored"},
                    "agent": [
                        {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "performer", "display": "Performer"}]},
                         "who": {"reference": model_url, "display": provenance.model}},
                        {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "assembler", "display": "Assembler"}]},
                         "who": {"reference": bank_url, "display": f"Prompt bank {provenance.bank_name}"}},
                    ],
                }
            )
        bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": self.now, "entry": self.entries}
        # Through the library: a structurally invalid resource raises here, before anything is sent.
        return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


def export_bundle(items: list[ReportItem], include_crop: bool = False, now: dt.datetime | None = None) -> dict:
    """A FHIR Bundle (a JSON-ready dict) with one DiagnosticReport per item."""
    if not items:
        raise ExportError("There is no analysed photo to export yet. Analyse a photo first.", 409)
    builder = _BundleBuilder(now or dt.datetime.now(dt.timezone.utc))
    for item in items:
        builder.add_report(item, include_crop=include_crop)
    return builder.finish()
