"""Static files: versioned URLs cached for a year, unversioned ones revalidated; no Host-built redirects."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from flask import url_for

import plugins.chest_xray
import webapp

STATIC = Path(webapp.__file__).resolve().parent / "static"
PLUGIN_STATIC = Path(plugins.chest_xray.__file__).resolve().parent / "static"


def version_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture
def app(app_factory):
    return app_factory(LOAD_MODELS_AT_START=False)


def test_page_links_carry_each_files_content_hash_and_those_urls_are_immutable(app):
    client = app.test_client()
    links = re.findall(r'(?:href|src)="(/static/[^"?]+)\?v=([0-9a-f]{12})"', client.get("/").text)
    names = {path.removeprefix("/static/") for path, _ in links}
    assert {"app.css", "app.js", "vendor/htmx.min.js", "favicon.svg"} <= names
    for path, version in links:
        assert version == version_of(STATIC / path.removeprefix("/static/"))
        reply = client.get(f"{path}?v={version}")
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert reply.data == (STATIC / path.removeprefix("/static/")).read_bytes()


def test_unversioned_or_outdated_static_urls_are_revalidated(app):
    client = app.test_client()
    for query in ("", "?v=0123456789ab"):
        reply = client.get(f"/static/app.css{query}")
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "no-cache"
        assert reply.headers.get("ETag")


def test_plugin_static_files_are_versioned_too(app):
    with app.test_request_context():
        url = url_for("plugin_static.static_file", plugin="chest_xray", filename="chest_xray.css")
    assert url == f"/plugins/chest_xray/static/chest_xray.css?v={version_of(PLUGIN_STATIC / 'chest_xray.css')}"
    reply = app.test_client().get(url)
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert app.test_client().get("/plugins/chest_xray/static/chest_xray.css").headers["Cache-Control"] == "no-cache"


def test_a_missing_static_file_is_a_plain_404(app):
    with app.test_request_context():
        assert url_for("static", filename="nope.css") == "/static/nope.css"  # nothing to hash, no version
    reply = app.test_client().get("/static/nope.css")
    assert reply.status_code == 404
    assert "immutable" not in reply.headers.get("Cache-Control", "")


@pytest.mark.parametrize("path", ["//", "//evil.example/", "//status", "/static//app.css", "/photos//x",
                                  "/plugins/chest_xray/static//chest_xray.css", "/status/"])
def test_no_path_is_answered_with_a_redirect_built_from_the_host_header(app, path):
    reply = app.test_client().get("/", environ_overrides={"PATH_INFO": path}, headers={"Host": "evil.example"})
    assert not 300 <= reply.status_code < 400, (reply.status_code, reply.headers.get("Location"))
    assert "Location" not in reply.headers
