"""Who may call /api/*, and the OpenAPI 3.1 document checked against real answers (issue 13).

- ``/api/analyze`` took cross-site form posts: anyone's page could make a
  visitor's browser submit compute jobs. Refused now, with or without keys.
- ``PRIVASCAN_API_KEYS``: only ``Authorization: Bearer <key>`` gets in; only
  the keys' hashes are kept.
- ``/api/openapi.json`` is a valid OpenAPI 3.1 document (openapi-spec-validator),
  and the status code and JSON body of every real call below conform to it
  (jsonschema, against the schema the document gives for that status).
"""

from __future__ import annotations

import io

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec
from PIL import Image

from tests.helpers import jpeg_bytes, multipart, photo_bytes
from tests.synthetic import make_lesion_photo
from webapp.api_access import key_hashes

EVIL = "https://evil.example"


def conforms(spec: dict, path: str, method: str, response) -> dict:
    """Assert the status is documented for the operation and the body matches its schema; returns the body."""
    responses = spec["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, (path, method, status, response.get_data(as_text=True)[:300])
    content = responses[status]["content"]
    assert response.mimetype in content, (status, response.mimetype)
    body = response.get_json(force=True)
    schema = {**content[response.mimetype]["schema"], "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


def analyze(client, content: bytes, query: str = "", headers: dict | None = None):
    return client.post(f"/api/analyze{query}", headers=headers or {}, **multipart([("image", (content, "x.jpg"))]))


@pytest.fixture
def api_app(app_factory):
    return app_factory()


def test_the_openapi_document_is_valid_openapi_3_1(api_app):
    response = api_app.test_client().get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1")
    validate_spec(spec)  # raises on an invalid document
    assert spec["security"] == []  # no keys configured here
    conforms(spec, "/api/openapi.json", "get", response)


def test_real_answers_conform_to_the_document(api_app):
    client = api_app.test_client()
    spec = client.get("/api/openapi.json").get_json()
    seen = {}

    def check(response, expected: int):
        assert response.status_code == expected, response.get_data(as_text=True)[:500]
        seen[expected] = conforms(spec, "/api/analyze", "post", response)
        return seen[expected]

    body = check(analyze(client, photo_bytes(3), "?explain=1&analyse_anyway=1"), 200)
    assert body["conditions"] and body["heatmap"].startswith("data:image/png;base64,")
    gated = check(analyze(client, jpeg_bytes(320, 240)), 200)  # a flat picture: "can't assess", still a 200
    assert gated["assessable"] is False and gated["conditions"] == []
    fhir = analyze(client, photo_bytes(4), "?fhir=1&analyse_anyway=1")
    assert fhir.mimetype == "application/fhir+json"
    check(fhir, 200)
    assert check(analyze(client, b""), 400)["status"] == 400
    check(analyze(client, photo_bytes(5), "?app=nope"), 400)
    check(analyze(client, b"%PDF-1.4 not an image"), 415)
    huge = io.BytesIO()
    Image.new("L", (12_000, 6_000)).save(huge, format="PNG")  # 72 MP: over the 50 MP limit
    check(analyze(client, huge.getvalue()), 413)
    check(analyze(client, jpeg_bytes(40, 30), "?fhir=1"), 422)  # too small to analyse: no report
    check(analyze(client, photo_bytes(6), headers={"Origin": EVIL}), 403)
    print("statuses checked against the document:", sorted(seen))


def test_limits_and_keys_answers_conform_too(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False, API_KEY_HASHES=key_hashes("k-1"), RATE_LIMIT_ENABLED=True,
                      RATE_LIMIT_UPLOADS="1 per minute")
    client = app.test_client()
    spec = client.get("/api/openapi.json", headers={"Authorization": "Bearer k-1"}).get_json()
    validate_spec(spec)
    assert spec["security"] == [{"bearerKey": []}]
    conforms(spec, "/api/analyze", "post", analyze(client, b""))  # 401
    conforms(spec, "/api/openapi.json", "get", client.get("/api/openapi.json"))  # 401
    key = {"Authorization": "Bearer k-1"}
    assert analyze(client, b"", headers=key).status_code == 400
    limited = analyze(client, b"", headers=key)
    assert limited.status_code == 429
    conforms(spec, "/api/analyze", "post", limited)


# -- cross-site -------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"Origin": EVIL},
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Origin": "http://localhost.evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_form_post_is_refused(api_app, headers):
    worker = api_app.extensions["privascan_worker"]
    response = analyze(api_app.test_client(), photo_bytes(7), headers=headers)
    assert response.status_code == 403
    assert "another web site" in response.get_json()["error"]
    assert worker.pending() == 0  # no compute job was queued


def test_same_origin_and_scripts_are_served(api_app):
    client = api_app.test_client()
    for headers in ({}, {"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
        assert analyze(client, b"", headers=headers).status_code == 400, headers  # reached the view (empty image)


def test_cross_site_is_refused_even_with_a_valid_key(app_factory):
    app = app_factory(LOAD_MODELS_AT_START=False, API_KEY_HASHES=key_hashes("k-1"))
    response = analyze(app.test_client(), b"", headers={"Authorization": "Bearer k-1", "Origin": EVIL})
    assert response.status_code == 403


# -- keys ----------------------------------------------------------------------------------
def test_with_keys_configured_the_api_needs_one(app_factory):
    app = app_factory(API_KEY_HASHES=key_hashes("alpha-key, beta-key"))
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "alpha-key"},
                    {"Authorization": "Basic YWxwaGEta2V5"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer alpha-key2"}, {"Authorization": "Bearer é"}):
        response = analyze(client, photo_bytes(8), headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.get_json()["error"]
    assert client.get("/api/openapi.json").status_code == 401
    for key in ("alpha-key", "beta-key"):
        answer = analyze(client, photo_bytes(8), "?analyse_anyway=1", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.get_json()["conditions"]
    # The page is not part of the API: no key needed there.
    assert client.get("/").status_code == 200


def test_keys_are_hashed_at_start_up_and_never_kept(monkeypatch, app_factory):
    monkeypatch.setenv("PRIVASCAN_API_KEYS", "s3cret-alpha,s3cret-beta")
    app = app_factory(LOAD_MODELS_AT_START=False)  # the keys come from the environment, as in production
    assert len(app.config["API_KEY_HASHES"]) == 2
    assert "s3cret" not in repr(dict(app.config))
    client = app.test_client()
    assert analyze(client, b"").status_code == 401
    assert analyze(client, b"", headers={"Authorization": "Bearer s3cret-beta"}).status_code == 400


def test_the_lesion_box_is_in_the_pixels_of_the_image_as_sent(api_app):
    """A photo larger than the 3072 px the app works at: the answer still speaks in the sent image's pixels."""
    image, truth = make_lesion_photo(9, width=800, height=600)
    big = image.resize((4000, 3000), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=90)
    body = analyze(api_app.test_client(), buffer.getvalue(), "?analyse_anyway=1").get_json()
    assert body["image_size"] == [4000, 3000]
    x0, y0, x1, y1 = body["lesion_box"]
    scale = 5  # 800 -> 4000
    assert abs(x0 - truth.x0 * scale) < 200 and abs(x1 - truth.x1 * scale) < 200
    assert abs(y0 - truth.y0 * scale) < 200 and abs(y1 - truth.y1 * scale) < 200
