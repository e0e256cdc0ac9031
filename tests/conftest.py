"""Fixtures: a tiny random MedSigLIP built offline, and apps that load it.

The tiny model goes through the same ``from_pretrained`` code that loads the
real weights; only its size differs. Helpers live in tests/helpers.py (they
are re-exported here for older imports).
"""

from __future__ import annotations

import os

import pytest

from plugins.medsiglip.tiny_model import build_tiny_siglip
from tests.helpers import *  # noqa: F401,F403  (re-exported for modules that still import from conftest)
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, NCI_PHOTO, Browser, make_app


def pytest_runtest_setup(item):
    """Tests that use the real test photo skip, with the reason, when ../shared/data is not beside the checkout."""
    module = getattr(item, "module", None)
    if module is not None and getattr(module, "NCI_PHOTO", None) is not None and not NCI_PHOTO.exists():
        pytest.skip(f"the real test photo is missing: {NCI_PHOTO} (../shared/data beside the checkout)")


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_dir(tmp_path_factory):
    """Apps built by tests (and servers they start) keep bank embeddings here, never in the user's real cache."""
    folder = tmp_path_factory.mktemp("embedding-cache")
    previous = os.environ.get("PRIVASCAN_CACHE_DIR")
    os.environ["PRIVASCAN_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("PRIVASCAN_CACHE_DIR", None)
    else:
        os.environ["PRIVASCAN_CACHE_DIR"] = previous


@pytest.fixture
def app_factory(tiny_model_dir):
    """``app_factory(**config)`` makes apps on the tiny model; each one's worker is stopped at teardown."""
    made = []

    def factory(**overrides):
        return adopt(make_app(tiny_model_dir, **overrides))

    def adopt(app):
        """Stop this app's worker at teardown too (an app built with ``create_app`` directly)."""
        made.append(app)
        return app

    factory.adopt = adopt
    yield factory
    for each in made:
        each.extensions["privascan_worker"].stop()


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium driven by Playwright, one per module (never a downloaded browser)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip")))


@pytest.fixture
def app(tiny_model_dir):
    app = make_app(tiny_model_dir)
    yield app
    app.extensions["privascan_worker"].stop()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def browser(client):
    return Browser(client)


# -- scale-out mode: a real redis-server (tests/redis_server.py) ---------------
@pytest.fixture(scope="session")
def redis_server_url():
    from tests.redis_server import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url):
    """The shared test Redis, emptied before each test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    return redis_server_url
