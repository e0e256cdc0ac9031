"""The JSON API described as an OpenAPI 3.1 document, served at ``/api/openapi.json``.

Written as data next to the code that answers (``webapp/views/api.py``),
so a client can generate its bindings and a test can check that the real
answers conform: tests/test_api_access.py validates this document with
openapi-spec-validator and every response body of real calls against the
schema of its status code. docs/api.md says the same in words.
"""

from __future__ import annotations

from typing import Any

NULLABLE_STRING = {"type": ["string", "null"]}
NUMBER_OR_NULL = {"type": ["number", "null"]}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            **extra}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


SCHEMAS: dict[str, Any] = {
    "Error": _object({
        "error": {"type": "string", "description": "What went wrong, in words for a person."},
        "status": {"type": "integer", "description": "The HTTP status, repeated."},
    }, additionalProperties=False),
    "Condition": _object({
        "id": {"type": "string"},
        "label": {"type": "string"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "groups": {"type": "array", "items": {"type": "string"}},
        "snomed_ct": {"type": "string", "description": "SNOMED CT code, or empty"},
        "icd10": {"type": "string", "description": "ICD-10 code, or empty"},
    }, additionalProperties=False),
    "QualityCheck": _object({
        "name": {"type": "string"},
        "value": NUMBER_OR_NULL,
        "limit": {"type": "number"},
        "passed": {"type": "boolean"},
        "hint": {"type": "string", "description": "How to retake the picture when the check failed"},
    }, additionalProperties=False),
    "Adapter": _object({
        "id": {"type": "string"},
        "method": {"type": "string"},
        "conditions": {"type": "array", "items": {"type": "string"}},
        "fitted_at": {"type": "string"},
        "template_set": {"type": "string"},
    }),
    "AnalysisResult": _object(
        {
            "app": {"type": "string", "description": "The clinical app (modality) that answered"},
            "template_set": {"type": "string"},
            "image_size": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2,
                           "description": "[width, height] of the image as sent, after its EXIF rotation"},
            "lesion_box": {"oneOf": [
                {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                {"type": "null"}], "description": "[x0, y0, x1, y1] in the pixels of image_size, or null"},
            "localizer": NULLABLE_STRING,
            "notes": {"type": "array", "items": {"type": "string"}},
            "adapter": {"oneOf": [{"$ref": "#/components/schemas/Adapter"}, {"type": "null"}]},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "conditions": {"type": "array", "items": {"$ref": "#/components/schemas/Condition"},
                           "description": "Ranked, most probable first; empty when not analysed"},
            "headline": {"oneOf": [
                _object({"id": {"type": "string"}, "label": {"type": "string"}, "summary": {"type": "string"}},
                        additionalProperties=False),
                {"type": "null"}]},
            "risk": {"enum": ["high", "moderate", "low", "unclear", "unknown"]},
            "confidence": {"type": "string"},
            "assessable": {"type": "boolean"},
            "tier": {"type": "string", "description": "The bank's tier id, or cant_assess"},
            "tier_label": {"type": "string"},
            "tier_meaning": {"type": "string"},
            "low_quality": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "advice_shown": {"type": "boolean"},
            "quality": _object({"passed": {"type": "boolean"},
                                "checks": {"type": "array", "items": {"$ref": "#/components/schemas/QualityCheck"}}},
                               additionalProperties=False),
            "scope": _object({"in_scope": {"type": ["boolean", "null"]}, "score": NUMBER_OR_NULL,
                              "message": {"type": "string"}}, additionalProperties=False),
            "skin_tone": {"oneOf": [
                _object({"ita": {"type": "number"}, "band": {"type": "string"}, "label": {"type": "string"},
                         "caution": {"type": "string"}}, additionalProperties=False),
                {"type": "null"}]},
            "calibrated": {"type": "boolean"},
            "scores_note": {"type": "string"},
            # Only when the image was analysed:
            "margin": {"type": "number"},
            "entropy_bits": {"type": "number", "minimum": 0},
            "reliable": {"type": "boolean"},
            "not_clear": {"type": "boolean"},
            # Only with explain=1:
            "heatmap": {"type": "string", "pattern": "^data:image/png;base64,"},
            "heatmap_condition": {"type": "string"},
        },
        required=["app", "template_set", "image_size", "lesion_box", "localizer", "notes", "adapter", "timings",
                  "conditions", "headline", "risk", "confidence", "assessable", "tier", "tier_label", "tier_meaning",
                  "low_quality", "reasons", "advice_shown", "quality", "scope", "skin_tone", "calibrated",
                  "scores_note"],
        additionalProperties=False,
    ),
    "FhirBundle": {
        "type": "object",
        "description": "A FHIR R4 Bundle: a preliminary DiagnosticReport, an Observation per condition, Devices, a "
                       "Provenance (docs/lesions.md)",
        "properties": {"resourceType": {"const": "Bundle"}, "type": {"type": "string"},
                       "entry": {"type": "array", "items": {"type": "object"}}},
        "required": ["resourceType", "type", "entry"],
    },
}


def _flag(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}}


def openapi_document(keys_required: bool) -> dict:
    """The document; ``keys_required`` (PRIVASCAN_API_KEYS set) makes the bearer key part of every operation."""
    security = [{"bearerKey": []}] if keys_required else []
    refused = _error("Cross-site request (another web site's Origin, or Sec-Fetch-Site: cross-site): refused "
                     "with or without a key")
    unauthorised = _error("PRIVASCAN_API_KEYS is set and no valid 'Authorization: Bearer <key>' was sent")
    too_many = _error("Over the per-client rate limit (Retry-After says when to try again)")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PrivaScan JSON API",
            "version": "1",
            "summary": "One image in, one triage result out; nothing is kept after the response.",
            "description": "See docs/api.md. PrivaScan is a triage aid, not a diagnosis.",
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "security": security,
        "paths": {
            "/api/analyze": {
                "post": {
                    "operationId": "analyze",
                    "summary": "Analyse one image",
                    "parameters": [
                        _flag("explain", "Also compute the Grad-CAM heatmap of the headline condition"),
                        _flag("fhir", "Answer with a FHIR R4 Bundle instead"),
                        _flag("crop", "With fhir=1: add the crop as a Media resource"),
                        _flag("analyse_anyway", "Run the model although the quality gate failed"),
                        _flag("adapter", "0: score zero-shot even when the clinic's adapter is installed"),
                        {"name": "app", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "Clinical app (modality), e.g. dermatology or chest_xray"},
                        {"name": "template_set", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "Kind of picture, e.g. clinical or dermoscopy"},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {
                            "schema": {"type": "object", "properties": {
                                "image": {"type": "string", "contentMediaType": "application/octet-stream",
                                          "description": "JPEG, PNG, WebP or HEIC"}},
                                "required": ["image"]},
                        }},
                    },
                    "responses": {
                        "200": {"description": "The result (every gate verdict is a 200: the answer may be "
                                               "'can't assess')",
                                "content": {
                                    "application/json": {"schema": {"$ref": "#/components/schemas/AnalysisResult"}},
                                    "application/fhir+json": {"schema": {"$ref": "#/components/schemas/FhirBundle"}},
                                }},
                        "400": _error("No image field, a damaged file, or an unknown app or template_set"),
                        "401": unauthorised,
                        "403": refused,
                        "413": _error("The file, the image's pixels, or the memory its decoding needs is too large"),
                        "415": _error("Not a supported image format"),
                        "422": _error("fhir=1 and the image could not be analysed"),
                        "429": too_many,
                        "503": _error("Model not loaded yet, the queue or the server's memory is full, or the "
                                      "analysis timed out (Retry-After)"),
                    },
                },
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "The OpenAPI 3.1 document",
                                "content": {"application/json": {"schema": {"type": "object"}}}},
                        "401": unauthorised,
                        "403": refused,
                        "429": too_many,
                    },
                },
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerKey": {
                "type": "http", "scheme": "bearer",
                "description": "One of the keys in PRIVASCAN_API_KEYS (only when the server has keys configured)"}},
        },
    }
