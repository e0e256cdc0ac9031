"""The plugin manager and the registry of everything plugins provide.

One ``PluginManager`` per ``create_app()`` (never a module global), so two
apps in one test run cannot see each other's plugins. The default plugins are
ordinary plugins registered by name; third-party ones come from the
``privascan`` entry-point group, optionally limited by an allow-list.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from . import hookspecs
from .interfaces import Classifier, ClinicalApp, Detector, Explainer, PromptBank

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "privascan"


class PluginError(RuntimeError):
    """A plugin set that cannot work together; raised at start-up with the reason."""


def make_plugin_manager(config: dict) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("privascan")
    pm.add_hookspecs(hookspecs)
    for module_name in config["DEFAULT_PLUGINS"]:
        pm.register(importlib.import_module(module_name), name=module_name)
    allow = config.get("PLUGIN_ALLOWLIST")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and entry_point.name not in allow:
            continue
        if pm.get_plugin(entry_point.name) is None:
            pm.register(entry_point.load(), name=entry_point.name)
    pm.check_pending()
    return pm


def plugin_folders(pm: pluggy.PluginManager, folder: str) -> dict[str, Path]:
    """Each registered plugin *package*'s ``folder`` (``templates``, ``static``) that exists, by short name.

    The short name is the plugin's registered name after its last dot: the
    entry-point name of an installed plugin, ``chest_xray`` for the default
    ``plugins.chest_xray``. Only packages count (a plugin whose ``__file__``
    is an ``__init__.py``): a single-module plugin shares its directory with
    other code, and that directory's folders are not its own.
    """
    found: dict[str, Path] = {}
    for name, plugin in pm.list_name_plugin():
        module_file = getattr(plugin, "__file__", None)
        if not module_file or Path(module_file).name != "__init__.py":
            continue
        path = Path(module_file).resolve().parent / folder
        if not path.is_dir():
            continue
        short = name.rsplit(".", 1)[-1]
        if short in found:
            raise PluginError(f"two plugins ship {folder}/ under the same name {short!r}: {found[short]} and {path}")
        found[short] = path
    return found


@dataclass
class Registry:
    """Everything the plugins registered, by name."""

    apps: dict[str, ClinicalApp] = field(default_factory=dict)
    banks: dict[str, PromptBank] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)
    classifiers: dict[str, Classifier] = field(default_factory=dict)
    explainers: dict[str, Explainer] = field(default_factory=dict)

    def app(self, name: str) -> ClinicalApp:
        """The clinical app of that name; an unknown name is an error, never a silent substitute."""
        try:
            return self.apps[name]
        except KeyError:
            raise PluginError(f"no clinical app named {name!r}; installed: {', '.join(self.apps)}") from None


def build_registry(pm: pluggy.PluginManager, config: dict) -> Registry:
    registry = Registry()
    sources = {
        "apps": pm.hook.register_clinical_apps,
        "banks": pm.hook.register_prompt_banks,
        "detectors": pm.hook.register_detectors,
        "classifiers": pm.hook.register_classifiers,
        "explainers": pm.hook.register_explainers,
    }
    for attribute, hook in sources.items():
        target = getattr(registry, attribute)
        # pluggy calls the last registered plugin first; reversed, the registry (and
        # so the modality picker) follows registration order: the defaults, then entry points.
        for items in reversed(hook(config=config)):
            for item in items or ():
                if item.name in target:
                    raise PluginError(f"two plugins register a {attribute[:-1]} named {item.name!r}")
                target[item.name] = item
    if not registry.apps:
        raise PluginError("no clinical app is registered: enable at least one plugin (for example plugins.dermatology)")
    for clinical_app in registry.apps.values():
        _check_app(clinical_app, registry)
    default = config.get("CLINICAL_APP")
    if default is not None and default not in registry.apps:
        raise PluginError(
            f"no clinical app {default!r} (PRIVASCAN_CLINICAL_APP): no plugin registers it; "
            f"installed: {', '.join(registry.apps)}"
        )
    return registry


def _check_app(clinical_app: ClinicalApp, registry: Registry) -> None:
    needed = {"banks": clinical_app.bank, "classifiers": clinical_app.classifier}
    if clinical_app.detector:
        needed["detectors"] = clinical_app.detector
    if clinical_app.explainer:
        needed["explainers"] = clinical_app.explainer
    for kind, name in needed.items():
        if name not in getattr(registry, kind):
            raise PluginError(
                f"clinical app {clinical_app.name!r} needs the {kind[:-1]} {name!r}, which no plugin registers"
            )
    if clinical_app.explainer:
        explainer = registry.explainers[clinical_app.explainer]
        if explainer.explains != clinical_app.classifier:
            raise PluginError(
                f"clinical app {clinical_app.name!r} pairs the explainer {explainer.name!r}, which explains "
                f"{explainer.explains!r}, with the classifier {clinical_app.classifier!r}"
            )
