"""PrivaScan: privacy-first clinical image triage.

``create_app`` builds one self-contained app: its own plugin manager, session
store, model manager and inference worker. Nothing is shared between two apps
in one process, which keeps tests isolated.
"""

from __future__ import annotations

import logging

from flask import Flask
from htmx_flask import Htmx
from PIL import Image

from .config import config_from_environment
from .hookspecs import hookimpl
from .resources import shipped_folder

__all__ = ["create_app", "hookimpl"]

log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(shipped_folder("templates")), static_folder="static")
    app.config.update(config_from_environment())
    if test_config:
        app.config.update(test_config)
        if "SECRET_KEY" in test_config:
            app.config["SECRET_KEY_GENERATED"] = False
    # Pillow raises DecompressionBombError above twice this; images.py also
    # turns the warning in between into an error.
    Image.MAX_IMAGE_PIXELS = app.config["MAX_IMAGE_PIXELS"]

    from . import (
        api_access, decoding, errors, i18n, jobs, local_time, metrics, page_words, plugin_assets, rate_limit, security,
        sessions, static_assets, unread_body,
    )
    from .adapter import install_adapter
    from .bank_overrides import apply_bank_overrides
    from .plugins import build_registry, make_plugin_manager, plugin_folders
    from .models import ModelManager
    from .views import api, health, lesions, live, pages, photos, reports, results

    if app.config.get("REDIS_URL"):
        _connect_redis_or_exit(app)

    Htmx(app)
    health.init_app(app)  # before sessions: /healthz and /readyz never create one
    rate_limit.init_app(app)  # next: a client over its limit is answered before anything else runs
    i18n.init_app(app)  # the request's language, its in-memory catalogue, Babel's formats
    page_words.init_app(app)  # the scripts' words, in the page's language
    sessions.init_app(app)  # after Htmx: it installs the in-memory request class
    local_time.init_app(app)  # after sessions: it remembers the browser's time zone in the session
    security.init_app(app)
    static_assets.init_app(app)  # ?v=<hash> on static URLs, cached for a year; no redirects from routing
    errors.init_app(app)
    unread_body.init_app(app)
    decoding.init_app(app)
    api_access.init_app(app)

    pm = make_plugin_manager(app.config)
    registry = build_registry(pm, app.config)
    apply_bank_overrides(registry, app.config)  # PRIVASCAN_BANK_OVERRIDES: a clinic's fitted alert thresholds
    install_adapter(registry, app.config)  # PRIVASCAN_ADAPTER: a clinic's adapter; a mismatched one stops start-up
    app.extensions["privascan_plugins"] = pm
    app.extensions["privascan_registry"] = registry
    plugin_assets.init_app(app, pm)  # plugins' templates/ (after the repo's) and static/
    i18n.add_plugin_catalogues(app, plugin_folders(pm, "translations"))  # and their translations/
    models = ModelManager(registry, default_app=app.config["CLINICAL_APP"])
    app.extensions["privascan_models"] = models
    jobs.init_app(app)

    app.register_blueprint(pages.bp)
    app.register_blueprint(photos.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(live.bp)
    metrics.init_app(app)
    app.register_blueprint(lesions.bp)
    app.register_blueprint(reports.bp)
    results.init_context(app)
    rate_limit.limit_image_endpoints(app)

    # Scale-out mode: web replicas load no model (the workers do; `privascan worker` sets ROLE).
    web_replica_of_fleet = app.config.get("REDIS_URL") and app.config.get("ROLE") != "worker"
    if app.config["LOAD_MODELS_AT_START"] and not web_replica_of_fleet:
        models.start()
    return app


def _connect_redis_or_exit(app: Flask) -> None:
    """Scale-out mode starts only against a reachable Redis that keeps nothing on disk."""
    from .redis_connection import RedisRefused, init_app

    try:
        init_app(app)
    except RedisRefused as exc:
        log.critical("PrivaScan did not start: %s", exc)
        raise SystemExit(f"PrivaScan did not start: {exc}") from None
