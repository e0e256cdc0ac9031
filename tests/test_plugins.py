"""The plugin system: hooks, default plugins, entry points, allow-list, and the guard tests.

Like datasette's, the guard tests fail when a hook is added without a test
named ``test_hook_<name>`` here or without its section in docs/plugins.md.
"""

from __future__ import annotations

import datetime as dt

import re
from pathlib import Path

import pytest

from webapp.interfaces import Classifier, ClinicalApp, Detector, Explainer, PromptBank
from webapp.plugins import PluginError, build_registry, make_plugin_manager

REPO = Path(__file__).resolve().parents[1]
BASE = {"DEFAULT_PLUGINS": ("plugins.medsiglip", "plugins.dermatology"), "PLUGIN_ALLOWLIST": (), "MODEL": "unused",
        "HF_TOKEN": None, "LESION_WEIGHTS": None}


@pytest.fixture
def pm():
    return make_plugin_manager(dict(BASE))


def hook_names(pm) -> list[str]:
    return sorted(name for name in dir(pm.hook) if not name.startswith("_"))


def test_every_hook_has_a_test(pm):
    tests = {name for name in globals() if name.startswith("test_hook_")}
    missing = [name for name in hook_names(pm) if f"test_hook_{name}" not in tests]
    assert not missing, f"hooks without a test_hook_<name>: {missing}"


def test_every_hook_is_documented(pm):
    docs = (REPO / "docs" / "plugins.md").read_text()
    for name in hook_names(pm):
        # The heading is the hook's signature, exactly as webapp/hookspecs.py declares it.
        arguments = ", ".join(getattr(pm.hook, name).spec.argnames)
        assert re.search(rf"^### `{name}\({re.escape(arguments)}\)`$", docs, re.M), f"docs/plugins.md lacks a section `{name}({arguments})`"


def test_hook_register_clinical_apps(pm):
    apps = [app for items in pm.hook.register_clinical_apps(config=BASE) for app in items]
    assert [app.name for app in apps] == ["dermatology"]
    assert all(isinstance(app, ClinicalApp) for app in apps)
    assert apps[0].detector == "classical"  # no lesion weights configured
    with_weights = [a for items in pm.hook.register_clinical_apps(config={**BASE, "LESION_WEIGHTS": "w.pt"}) for a in items]
    assert with_weights[0].detector == "yolo"


def test_hook_register_prompt_banks(pm):
    banks = [bank for items in pm.hook.register_prompt_banks(config=BASE) for bank in items]
    assert [bank.name for bank in banks] == ["dermatology"]
    assert isinstance(banks[0], PromptBank) and len(banks[0].conditions) >= 15


def test_hook_register_detectors(pm):
    detectors = [d for items in pm.hook.register_detectors(config=BASE) for d in items]
    assert [d.name for d in detectors] == ["classical"]
    assert all(isinstance(d, Detector) for d in detectors)


def test_hook_register_classifiers(pm):
    classifiers = [c for items in pm.hook.register_classifiers(config=BASE) for c in items]
    assert [c.name for c in classifiers] == ["medsiglip"]
    assert isinstance(classifiers[0], Classifier)


def test_hook_register_explainers(pm):
    explainers = [e for items in pm.hook.register_explainers(config=BASE) for e in items]
    assert [e.name for e in explainers] == ["medsiglip-gradcam"]
    assert isinstance(explainers[0], Explainer)


def test_hook_register_commands(pm):
    """The dermatology plugin brings its own subcommand; the core's command line picks it up through the hook."""
    import argparse

    from webapp.cli import build_parser

    parser = argparse.ArgumentParser(prog="privascan")
    subparsers = parser.add_subparsers(dest="command")
    assert pm.hook.register_commands(subparsers=subparsers) == []  # a notification: nothing returned
    args = parser.parse_args(["train-detector", "masks", "--out", "w.pt"])
    assert args.command == "train-detector" and args.out == "w.pt" and callable(args.handler)
    full = build_parser().parse_args(["train-detector", "masks", "--out", "w.pt"])
    assert full.handler.__module__ == "plugins.dermatology.train_detector_command"


def test_no_module_under_webapp_imports_a_plugin():
    """The core reaches plugins only through pluggy: no ``import plugins...`` anywhere under webapp/."""
    import ast

    offenders = []
    for path in sorted((REPO / "webapp").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {name}" for name in names
                          if name == "plugins" or name.startswith("plugins.")]
    assert not offenders, offenders


def test_hook_alert_raised(app_factory):
    """Off by default; an installed plugin gets each raised alert and the config, never a frame or an image."""
    import dataclasses
    import io

    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    from tests.helpers import Browser
    from tests.plugins import alert_recorder
    from tests.synthetic import make_lesion_photo
    from webapp.live import Alert

    default = make_plugin_manager(dict(BASE))
    assert default.hook.alert_raised.get_hookimpls() == []  # the core ships nothing that sends alerts anywhere
    assert default.hook.alert_raised.spec.argnames == ("alert", "config")

    alert_recorder.RECEIVED.clear()
    app = app_factory(DEFAULT_PLUGINS=(*BASE["DEFAULT_PLUGINS"], "tests.plugins.alert_recorder"))
    try:
        browser = Browser(app.test_client())
        bank = app.extensions["privascan_registry"].banks["dermatology"]
        # Melanoma alerts on any score; nothing else can reach its threshold.
        browser.post("/live/thresholds", data={f"threshold_{c.id}": "0" if c.id == "melanoma" else "1" for c in bank.conditions})
        assert browser.post("/live/start").status_code == 200
        image, _ = make_lesion_photo(3, width=640, height=480)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        for _ in range(4):
            boundary, body = encode_multipart(MultiDict([("frame", FileStorage(io.BytesIO(buffer.getvalue()), "frame.jpg"))]))
            response = browser.post("/live/frame", data=body, content_type=f"multipart/form-data; boundary={boundary}")
            assert response.status_code == 200
        assert len(alert_recorder.RECEIVED) == 1  # raised once (on the third frame), not once per frame
        received = alert_recorder.RECEIVED[0]
        assert set(received) == {"alert", "config"}
        alert = received["alert"]
        assert isinstance(alert, Alert) and alert.condition_id == "melanoma" and alert.number == 1
        assert received["config"] is app.config
        # Words and numbers only: no frame, crop, image or array travels with an alert.
        for field in dataclasses.fields(alert):
            value = getattr(alert, field.name)
            assert isinstance(value, (str, int, float, tuple)), field.name
            assert not isinstance(value, tuple) or all(isinstance(item, str) for item in value), field.name
        assert "SNOMED CT 93655004" in alert.explanation and "ICD-10 C43.9" in alert.explanation
        # The plugin got exactly what the session's log holds (the log gives the time on the reader's clock, zone named).
        logged = browser.get("/live/log.json", htmx=False).get_json()["alerts"]
        assert [{**entry, "raised_at": dt.datetime.fromisoformat(entry["raised_at"])} for entry in logged] == \
            [{**alert.as_dict(), "raised_at": dt.datetime.fromisoformat(alert.raised_at), "time_zone": logged[0]["time_zone"]}]
    finally:
        alert_recorder.RECEIVED.clear()


def test_each_app_gets_its_own_plugin_manager(app_factory):
    first = app_factory()
    second = app_factory(DEFAULT_PLUGINS=("plugins.medsiglip", "plugins.dermatology", "tests.plugins.echo_plugin"))
    assert "echo" not in first.extensions["privascan_registry"].apps
    assert "echo" in second.extensions["privascan_registry"].apps
    assert first.extensions["privascan_plugins"] is not second.extensions["privascan_plugins"]


@pytest.fixture
def installed_entry_point(tmp_path, monkeypatch):
    """Install the echo plugin the way pip would: a dist-info with an entry point in group 'privascan'."""
    dist = tmp_path / "privascan_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: privascan-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[privascan]\necho = tests.plugins.echo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    return "echo"


def test_entry_point_plugins_load_unless_the_allow_list_excludes_them(installed_entry_point):
    loaded = make_plugin_manager({**BASE, "PLUGIN_ALLOWLIST": None})
    assert loaded.get_plugin("echo") is not None
    registry = build_registry(loaded, {**BASE})
    assert set(registry.apps) == {"dermatology", "echo"}
    allowed = make_plugin_manager({**BASE, "PLUGIN_ALLOWLIST": ("echo",)})
    assert allowed.get_plugin("echo") is not None
    refused = make_plugin_manager({**BASE, "PLUGIN_ALLOWLIST": ("something-else",)})
    assert refused.get_plugin("echo") is None


def test_an_app_naming_a_missing_part_fails_at_start_up():
    pm = make_plugin_manager({**BASE, "DEFAULT_PLUGINS": ("plugins.dermatology", "tests.plugins.echo_plugin")})
    with pytest.raises(PluginError, match="needs the classifier 'medsiglip'"):
        build_registry(pm, BASE)


def test_no_app_registered_is_a_clear_error():
    pm = make_plugin_manager({**BASE, "DEFAULT_PLUGINS": ("plugins.medsiglip",)})
    with pytest.raises(PluginError, match="no clinical app"):
        build_registry(pm, BASE)


def test_a_hook_with_a_misspelt_name_is_refused():
    from pluggy import PluginValidationError

    from webapp import hookimpl

    class Misspelt:
        @hookimpl
        def register_detector(self, config):  # missing the final s
            return []

    pm = make_plugin_manager(dict(BASE))
    pm.register(Misspelt())
    with pytest.raises(PluginValidationError):
        pm.check_pending()


def test_an_explainer_paired_with_a_classifier_it_does_not_explain_fails_at_start_up():
    """Found at start-up, not at the first heatmap."""
    from webapp import hookimpl

    class OtherClassifier:
        name = "other"
        input_size = 224

        def load(self): ...
        def describe(self): return "other"
        def classify(self, crop, bank, template_set): ...

    class MismatchedApp:
        @hookimpl
        def register_clinical_apps(self, config):
            return [ClinicalApp("mismatch", "Mismatch", bank="dermatology", classifier="other",
                                explainer="medsiglip-gradcam")]

        @hookimpl
        def register_classifiers(self, config):
            return [OtherClassifier()]

    pm = make_plugin_manager(dict(BASE))
    pm.register(MismatchedApp())
    with pytest.raises(PluginError, match="explainer 'medsiglip-gradcam', which explains 'medsiglip'.*classifier 'other'"):
        build_registry(pm, BASE)


def test_an_unknown_default_clinical_app_stops_start_up_with_the_names_that_exist():
    with pytest.raises(PluginError, match=r"no clinical app 'skin' \(PRIVASCAN_CLINICAL_APP\).*installed: dermatology"):
        build_registry(make_plugin_manager(dict(BASE)), {**BASE, "CLINICAL_APP": "skin"})


def test_the_registry_never_substitutes_another_app_for_an_unknown_name(pm):
    registry = build_registry(pm, BASE)
    assert registry.app("dermatology").name == "dermatology"
    with pytest.raises(PluginError, match="no clinical app named 'nope'"):
        registry.app("nope")
