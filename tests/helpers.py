"""Helpers shared by the test modules: the tiny app, a page-like client, synthetic photos, a threaded server.

Import them from here (``from tests.helpers import make_app``); conftest.py holds only fixtures.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from pathlib import Path

from PIL import Image

from webapp import create_app

REPO = Path(__file__).resolve().parents[1]


SHARED_DATA = REPO.parent / "shared" / "data"


NCI_PHOTO = SHARED_DATA / "nci-melanoma-1800x1010.jpg"


# Debian's Chromium, driven by Playwright (never a downloaded browser). The
# background-networking switches keep it from calling Google's services.
CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@contextlib.contextmanager
def serving(app, name: str = "test-server"):
    """Serve ``app`` on a free loopback port in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(10)
        app.extensions["privascan_worker"].stop()


def small_bank():
    """A four-condition bank with two template sets, built directly from the dataclasses."""
    from webapp.interfaces import Condition, PromptBank, TemplateSet

    return PromptBank(
        name="test-derm",
        title="Test dermatology",
        conditions=(
            Condition("melanoma", "Melanoma", ("malignant",), ("an asymmetric pigmented lesion", "an irregular mole")),
            Condition("nevus", "Benign nevus", ("benign",), ("a round uniform brown mole",)),
            Condition("seb_k", "Seborrheic keratosis", ("benign",), ("a waxy stuck-on plaque",)),
            Condition("eczema", "Eczema", ("inflammatory",), ("itchy red patches", "lichenified skin")),
        ),
        template_sets=(
            TemplateSet("clinical", "Clinical photo", ("A photo of {}.", "A clinical photograph showing {}.")),
            TemplateSet("dermoscopy", "Dermoscopy", ("Dermoscopy image revealing {}.",)),
        ),
        content_hash="test-bank-1",
    )


def make_app(tiny_model_dir: str, **overrides):
    config = {
        "TESTING": True,
        "MODEL": tiny_model_dir,
        "SESSION_COOKIE_SECURE": False,
        "PLUGIN_ALLOWLIST": (),  # no third-party plugin leaks into the suite
        # The suite sends hundreds of requests a second from one address; tests/test_rate_limit.py turns it on.
        "RATE_LIMIT_ENABLED": False,
        **overrides,
    }
    app = create_app(config)
    app.extensions["privascan_models"].wait(120)
    return app


def csrf_token(client) -> str:
    """The page's CSRF token, as HTMX would send it."""
    html = client.get("/").get_data(as_text=True)
    return re.search(r'"X-CSRF-Token": "([^"]+)"', html).group(1)


class Browser:
    """A Flask test client that behaves like the page: HTMX headers and the CSRF token."""

    def __init__(self, client):
        self.client = client
        self.token = csrf_token(client)

    def headers(self, htmx: bool = True) -> dict:
        headers = {"X-CSRF-Token": self.token}
        if htmx:
            headers["HX-Request"] = "true"
        return headers

    def post(self, path: str, htmx: bool = True, **kwargs):
        return self.client.post(path, headers=self.headers(htmx), **kwargs)

    def get(self, path: str, htmx: bool = True, **kwargs):
        return self.client.get(path, headers={"HX-Request": "true"} if htmx else {}, **kwargs)

    def upload(self, *files: tuple[bytes, str], last_modified: str = "", htmx: bool = True):
        fields = [("photos", (content, name)) for content, name in files] + [("last_modified", last_modified)]
        return self.post("/photos", htmx=htmx, **multipart(fields))

    def photo_ids(self) -> list[str]:
        html = self.get("/", htmx=False).get_data(as_text=True)
        return re.findall(r'<article id="photo-([^"]+)"', html)


def multipart(fields: list[tuple[str, object]]) -> dict:
    """A multipart body encoded in memory; a value ``(bytes, filename)`` is a file part.

    Werkzeug's test client would spool a large body to a temporary file on
    the *client* side; encoding it here keeps the no-disk tests about the app.
    """
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    values = MultiDict(
        (key, FileStorage(io.BytesIO(value[0]), filename=value[1]) if isinstance(value, tuple) else value)
        for key, value in fields
    )
    boundary, body = encode_multipart(values)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def jpeg_bytes(width: int = 320, height: int = 240, colour=(200, 150, 120), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def gate_sized_photo_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    """An 800x600 synthetic lesion photo: large enough for the quality gate (its crop region is 224 px or more)."""
    from tests.synthetic import make_lesion_photo

    image, _ = make_lesion_photo(seed, width=800, height=600)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photo_bytes(seed: int = 0, fmt: str = "JPEG", **save) -> bytes:
    """A synthetic lesion photo, encoded; different seeds give different (non-duplicate) photos."""
    from tests.synthetic import make_lesion_photo

    image, _ = make_lesion_photo(seed)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()
