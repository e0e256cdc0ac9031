"""The app with a clinic's adapter (PRIVASCAN_ADAPTER): refused when it does not match, used end to end when it does.

The adapter is fitted by the real ``privascan adapt`` on synthetic photos whose
classes differ by colour and shape (tests/synthetic.py); the app then answers
held-out photos of those classes through the JSON API and the page.
"""

from __future__ import annotations

import dataclasses
import io
import re

import pytest

from tests.conftest import Browser, make_app
from tests.synthetic import make_kind_photo
from tests.test_cli_adapt import LABELS, MAPS, write_kinds
from webapp import cli
from webapp.adapter import AdapterError, load_adapter, save_adapter

PER_LABEL = 12


@pytest.fixture(scope="module")
def adapter_file(tiny_model_dir, tmp_path_factory):
    photos = write_kinds(tmp_path_factory.mktemp("kinds") / "photos", PER_LABEL)
    out = tmp_path_factory.mktemp("adapter") / "clinic.adapter.safetensors"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVASCAN_PLUGINS", "")
        patch.setenv("PRIVASCAN_MODEL", tiny_model_dir)
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name in ("PRIVASCAN_BANK_OVERRIDES", "PRIVASCAN_LESION_WEIGHTS", "PRIVASCAN_CLINICAL_APP", "PRIVASCAN_ADAPTER"):
            patch.delenv(name, raising=False)
        assert cli.main(["adapt", str(photos), "--out", str(out), *MAPS, "--quiet", "--test-split", "0"]) == 0
    return out


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ refusals


def test_adapter_for_another_model_stops_start_up(adapter_file, tiny_model_dir, tmp_path):
    other = dataclasses.replace(load_adapter(adapter_file), model_fingerprint="sha256:" + "0" * 64)
    save_adapter(tmp_path / "other-model.safetensors", other)
    with pytest.raises(AdapterError, match="another model"):
        make_app(tiny_model_dir, ADAPTER=str(tmp_path / "other-model.safetensors"))


def test_adapter_for_another_bank_stops_start_up(adapter_file, tiny_model_dir, tmp_path):
    edited = dataclasses.replace(load_adapter(adapter_file), bank_hash="0123456789abcdef")
    save_adapter(tmp_path / "edited-bank.safetensors", edited)
    with pytest.raises(AdapterError, match="fitted for bank 'dermatology' \\(hash 0123456789abcdef\\)"):
        make_app(tiny_model_dir, ADAPTER=str(tmp_path / "edited-bank.safetensors"))


def test_missing_adapter_file_stops_start_up(tiny_model_dir, tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        make_app(tiny_model_dir, ADAPTER=str(tmp_path / "nope.safetensors"))


def test_matching_adapter_is_installed(adapter_file, tiny_model_dir):
    app = make_app(tiny_model_dir, ADAPTER=str(adapter_file))
    try:
        registry = app.extensions["privascan_registry"]
        assert registry.adapters["dermatology"].adapter_id == load_adapter(adapter_file).adapter_id
    finally:
        app.extensions["privascan_worker"].stop()
