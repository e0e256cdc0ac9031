"""Security headers, CSRF on every state-changing route, HSTS behind a TLS proxy, error pages.

The CSRF test walks ``app.url_map`` rather than listing routes, so a route
added later cannot forget the token: it fails here first.
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.helpers import Browser, make_app, multipart, photo_bytes

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def words(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


# -- CSRF -----------------------------------------------------------------------------------
def state_changing_routes(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every non-GET route outside the stateless JSON API."""
    adapter = app.url_map.bind("localhost")
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("api."):
            continue
        for method in sorted((rule.methods or set()) & STATE_CHANGING):
            url = adapter.build(rule.endpoint, {name: "x" for name in rule.arguments}, method=method)
            routes.append((rule.endpoint, method, url))
    return routes


def test_every_state_changing_route_refuses_a_request_without_the_token(app):
    routes = state_changing_routes(app)
    endpoints = {endpoint for endpoint, _, _ in routes}
    assert {"photos.upload", "photos.clear", "photos.delete", "pages.update_settings"} <= endpoints
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(1), "mine.jpg"))
    (photo_id,) = browser.photo_ids()
    for endpoint, method, url in routes:
        url = url.replace("/x/", f"/{photo_id}/") if "/photos/x/" in url else url
        response = browser.client.open(url, method=method, headers={"HX-Request": "true"},
                                       **multipart([("photos", (photo_bytes(2), "sneaky.jpg")), ("taken_on", "2020-01-01")]))
        assert response.status_code in (403, 410), (endpoint, method, url, response.status_code)
        assert "out of date" in words(response) or "session had ended" in words(response)
    assert browser.photo_ids() == [photo_id]  # nothing was added, deleted or cleared


def test_a_wrong_or_borrowed_token_is_refused(app):
    mine, theirs = Browser(app.test_client()), Browser(app.test_client())
    assert mine.token != theirs.token
    upload = multipart([("photos", (photo_bytes(3), "a.jpg"))])
    for token in ("forged", theirs.token, ""):
        response = mine.client.post("/photos", headers={"X-CSRF-Token": token, "HX-Request": "true"}, **upload)
        assert response.status_code == 403
    assert mine.photo_ids() == []


def test_the_json_api_needs_no_token_because_it_keeps_nothing(app):
    # Stateless: no cookie is read and nothing survives the response, so there is nothing to forge.
    response = app.test_client().post("/api/analyze", **multipart([("image", (b"", "x.jpg"))]))
    assert response.status_code == 400
    assert "Set-Cookie" not in response.headers


# -- headers ----------------------------------------------------------------------------------
def test_every_kind_of_response_carries_the_headers_and_user_data_is_never_cached(app):
    browser = Browser(app.test_client())
    browser.upload((photo_bytes(4), "a.jpg"))
    (photo_id,) = browser.photo_ids()
    responses = {
        "page": browser.get("/", htmx=False),
        "partial": browser.get(f"/photos/{photo_id}/card"),
        "photo": browser.get(f"/photos/{photo_id}/photo.jpg"),
        "thumbnail": browser.get(f"/photos/{photo_id}/thumbnail.jpg"),
        "not found": browser.get("/no-such-page", htmx=False),
        "refused": browser.client.post("/session/clear"),
        "api": app.test_client().post("/api/analyze", **multipart([("image", (b"x", "x.jpg"))])),
    }
    if "live.log_csv_download" in app.view_functions:
        responses["alert log"] = browser.get("/live/log.csv", htmx=False)
    for kind, response in responses.items():
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-" not in csp, kind
        assert headers["X-Content-Type-Options"] == "nosniff", kind
        assert headers["Referrer-Policy"] == "no-referrer", kind
        assert headers["Cache-Control"] == "no-store", kind
        assert "Strict-Transport-Security" not in headers, kind  # plain HTTP: HSTS would be meaningless
        assert "Server" not in headers, kind  # gunicorn's own is dropped too (see test_strace_disk_writes)
    static = browser.get("/static/app.css", htmx=False)
    assert static.headers.get("Cache-Control") != "no-store"  # our own code and styles may be cached


def test_frame_ancestors_is_configurable(tiny_model_dir):
    app = make_app(tiny_model_dir, FRAME_ANCESTORS="https://portal.clinic.example")
    csp = app.test_client().get("/").headers["Content-Security-Policy"]
    assert csp.endswith("frame-ancestors https://portal.clinic.example")
    app.extensions["privascan_worker"].stop()


def test_hsts_behind_a_tls_proxy_only_when_told_to_trust_it(tiny_model_dir):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "scan.clinic.example"}
    trusting = make_app(tiny_model_dir, BEHIND_PROXY=True)
    client = trusting.test_client()
    response = client.get("/", headers=forwarded)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Strict-Transport-Security" not in client.get("/").headers  # the proxy said plain HTTP
    trusting.extensions["privascan_worker"].stop()
    # Without the setting, anyone could send those headers: they are ignored.
    direct = make_app(tiny_model_dir)
    assert "Strict-Transport-Security" not in direct.test_client().get("/", headers=forwarded).headers
    assert "Strict-Transport-Security" in direct.test_client().get("/", base_url="https://localhost").headers
    direct.extensions["privascan_worker"].stop()


# -- errors -----------------------------------------------------------------------------------
@pytest.fixture
def failing_app(tiny_model_dir):
    app = make_app(tiny_model_dir)

    @app.get("/test-only/boom")  # registered in this test app only
    def boom():
        raise RuntimeError("secret detail: patient Jane Doe, /srv/private/path")

    yield app
    app.extensions["privascan_worker"].stop()


def test_a_crash_shows_an_incident_id_and_nothing_else(failing_app, caplog):
    client = failing_app.test_client()
    with caplog.at_level(logging.ERROR):
        page = client.get("/test-only/boom")
        partial = client.get("/test-only/boom", headers={"HX-Request": "true"})
    for response in (page, partial):
        assert response.status_code == 500
        html = response.get_data(as_text=True)
        for leak in ("secret detail", "Jane Doe", "/srv/private", "RuntimeError", "Traceback"):
            assert leak not in html
        assert re.search(r"incident [0-9a-f]{8}", words(response))
    assert "<!doctype html>" in page.get_data(as_text=True)
    assert partial.headers["HX-Retarget"] == "#messages"
    incidents = re.findall(r"incident ([0-9a-f]{8})", words(page) + " " + words(partial))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for incident in incidents:
        assert incident in logged  # the operator can find the details
    assert any(record.exc_info for record in caplog.records)  # the traceback went to the log only
