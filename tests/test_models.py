"""ModelManager: background loading, readiness as soon as the default picture kind is prepared."""

from __future__ import annotations

from plugins.medsiglip import MedSigLIPClassifier
from webapp.models import ModelManager
from webapp.plugins import build_registry, make_plugin_manager

CONFIG = {"DEFAULT_PLUGINS": ("plugins.medsiglip", "plugins.dermatology", "plugins.chest_xray"),
          "PLUGIN_ALLOWLIST": (), "HF_TOKEN": None, "LESION_WEIGHTS": None}


class RecordingClassifier(MedSigLIPClassifier):
    """The real classifier, noting the manager's status each time it prepares a set."""

    def __init__(self, path, manager_box):
        super().__init__(path, device="cpu")
        self.manager_box = manager_box
        self.seen: list[tuple[str, str, str]] = []

    def prepare(self, bank, template_set):
        status = self.manager_box[0].status(self.name)
        self.seen.append((bank.name, template_set.id, status.state))
        super().prepare(bank, template_set)


def registry_with(tiny_model_dir, default_app):
    registry = build_registry(make_plugin_manager({**CONFIG, "MODEL": tiny_model_dir}), {**CONFIG, "MODEL": tiny_model_dir})
    box = []
    classifier = RecordingClassifier(tiny_model_dir, box)
    registry.classifiers["medsiglip"] = classifier
    manager = ModelManager(registry, default_app=default_app)
    box.append(manager)
    return manager, classifier


def test_default_set_first_then_ready_while_the_rest_are_prepared(tiny_model_dir):
    manager, classifier = registry_with(tiny_model_dir, "chest_xray")
    manager.load_all()
    assert classifier.seen[0] == ("chest_xray", "frontal", "loading")
    assert all(state == "ready" for _, _, state in classifier.seen[1:])  # analysis could already run
    assert {(bank, ts) for bank, ts, _ in classifier.seen} == {
        ("chest_xray", "frontal"), ("dermatology", "clinical"), ("dermatology", "dermoscopy")}
    status = manager.status("medsiglip")
    assert status.ready and status.background == ""
    assert classifier.text_tower_released


def test_a_missing_model_is_reported_not_raised(tmp_path):
    registry = build_registry(make_plugin_manager({**CONFIG, "MODEL": str(tmp_path / "nowhere")}),
                              {**CONFIG, "MODEL": str(tmp_path / "nowhere")})
    manager = ModelManager(registry, default_app="dermatology")
    manager.load_all()
    status = manager.status("medsiglip")
    assert status.state == "unavailable" and "does not exist" in status.message
    assert "PRIVASCAN_MODEL" in status.advice
