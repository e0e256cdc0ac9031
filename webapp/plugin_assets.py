"""Templates and static files that plugins ship inside their own packages.

A plugin package may hold ``templates/`` and ``static/`` folders beside its
``__init__.py``. Templates are found after the repository's own
``templates/`` (so the core's pages always win and a plugin cannot replace
them by accident); by convention a plugin keeps its templates under
``templates/<plugin>/`` so two plugins never collide. Static files are served
read-only from the plugin's own folder at ``/plugins/<plugin>/static/<path>``
(same origin, so the strict CSP allows them); ``<plugin>`` is the plugin's
short name (see ``webapp.plugins.plugin_folders``).
"""

from __future__ import annotations

import pluggy
from flask import Blueprint, Flask, abort, current_app, send_from_directory
from jinja2 import ChoiceLoader, FileSystemLoader

from .plugins import plugin_folders

bp = Blueprint("plugin_static", __name__)


def init_app(app: Flask, pm: pluggy.PluginManager) -> None:
    template_folders = plugin_folders(pm, "templates")
    # app.jinja_loader is the repo's templates/ folder; it stays first.
    app.jinja_loader = ChoiceLoader([app.jinja_loader, *(FileSystemLoader(str(p)) for p in template_folders.values())])
    app.extensions["privascan_plugin_static"] = plugin_folders(pm, "static")
    app.register_blueprint(bp)


@bp.get("/plugins/<plugin>/static/<path:filename>")
def static_file(plugin: str, filename: str):
    folder = current_app.extensions["privascan_plugin_static"].get(plugin)
    if folder is None:
        abort(404, description="No plugin of that name ships static files.")
    # send_from_directory refuses paths that leave the folder ("..", absolute) with a 404.
    return send_from_directory(folder, filename)
