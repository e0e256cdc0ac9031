"""``privascan new-plugin``: the package it writes installs, runs in the app, and passes its own tests.

"Installed" the way pip leaves an installed package: a ``*.dist-info`` folder
with the ``entry_points.txt`` that pip would write from the generated
pyproject.toml, and the package importable, both on ``sys.path``. The app then
finds the plugin through the ``privascan`` entry-point group, as it would in
production, with ``PLUGIN_ALLOWLIST`` naming it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import Browser, make_app, photo_bytes
from webapp.cli import main as privascan
from webapp.prompt_bank import load_prompt_bank

REPO = Path(__file__).resolve().parents[1]
NAME = "retina_demo"
PACKAGE = f"privascan_{NAME}"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line in a child process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "webapp.cli", *args], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def install_like_pip(project: Path, site: Path) -> None:
    """Write the dist-info pip would write for ``project`` (its entry points, from its pyproject)."""
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    points = metadata["entry-points"]["privascan"]
    dist = site / f"{metadata['name'].replace('-', '_')}-{metadata['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {metadata['name']}\nVersion: {metadata['version']}\n")
    (dist / "entry_points.txt").write_text("[privascan]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))


@pytest.fixture
def scaffolded(tmp_path, monkeypatch):
    project = tmp_path / f"privascan-{NAME}"
    assert privascan(["new-plugin", NAME, "--directory", str(project), "--title", "Retina (demo)"]) == 0
    site = tmp_path / "site-packages"
    install_like_pip(project, site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(project))
    importlib.invalidate_caches()
    yield project
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[module]


def test_the_console_script_is_registered():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="privascan")
    assert script.value == "webapp.cli:main"


def test_it_writes_a_complete_package(scaffolded):
    files = sorted(str(p.relative_to(scaffolded)) for p in scaffolded.rglob("*") if p.is_file())
    assert files == sorted([
        "pyproject.toml", "README.md", f"{PACKAGE}/__init__.py", f"{PACKAGE}/prompts/{NAME}.toml",
        f"{PACKAGE}/templates/{NAME}/result.html", f"{PACKAGE}/static/{NAME}.css", f"tests/test_{NAME}.py",
    ])
    pyproject = tomllib.loads((scaffolded / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["privascan"] == {NAME: PACKAGE}
    assert pyproject["project"]["name"] == f"privascan-{NAME}"
    bank = load_prompt_bank(scaffolded / PACKAGE / "prompts" / f"{NAME}.toml")
    assert bank.name == NAME and bank.title == "Retina (demo)" and len(bank.conditions) == 2
    assert {group for c in bank.conditions for group in c.groups} == {"normal", "abnormal"}
    assert '{% extends "partials/result_base.html" %}' in (scaffolded / PACKAGE / "templates" / NAME / "result.html").read_text()


def test_the_running_app_offers_the_installed_plugin(app_factory, scaffolded):
    assert [ep.value for ep in importlib.metadata.entry_points(group="privascan", name=NAME)] == [PACKAGE]
    app = app_factory(PLUGIN_ALLOWLIST=(NAME,))
    registry = app.extensions["privascan_registry"]
    assert app.extensions["privascan_plugins"].get_plugin(NAME) is not None
    assert registry.apps[NAME].title == "Retina (demo)"
    assert registry.banks[NAME].conditions  # loaded and validated at start-up
    browser = Browser(app.test_client())
    page = browser.get("/", htmx=False).get_data(as_text=True)
    picker = re.search(r'<select name="app"[^>]*>(.*?)</select>', page, re.DOTALL).group(1)
    assert f'<option value="{NAME}">Retina (demo)</option>' in picker

    # Picked in the UI, it analyses with its own bank and shows its own template and stylesheet.
    assert browser.post("/settings", data={"app": NAME, "template_set": "clinical"}).status_code == 200
    browser.upload((photo_bytes(9), "eye.jpg"))
    (photo_id,) = browser.photo_ids()
    assert browser.post(f"/photos/{photo_id}/analyze").status_code == 200
    assert app.extensions["privascan_worker"].join_idle(120)
    card = browser.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    assert f"result-{NAME}" in card and "Abnormal finding" in card and "No finding" in card
    assert "All findings, most likely first" in card and card.count("<progress") == 2
    css = browser.get(f"/plugins/{NAME}/static/{NAME}.css", htmx=False)
    assert css.status_code == 200 and f".result-{NAME}".encode() in css.data
    # Not allow-listed, it is not loaded.
    other = app_factory(PLUGIN_ALLOWLIST=())
    assert NAME not in other.extensions["privascan_registry"].apps


def test_the_scaffolded_tests_pass(scaffolded):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=scaffolded, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_command_line_writes_to_the_current_folder_by_default(tmp_path):
    result = run_cli("new-plugin", "fundus", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "privascan-fundus" / "privascan_fundus" / "__init__.py").is_file()
    assert "Wrote the plugin 'fundus'" in result.stdout


@pytest.mark.parametrize(
    "name, words",
    [
        ("Retina", "not a valid plugin name"),
        ("eye-fundus", "not a valid plugin name"),
        ("1eye", "not a valid plugin name"),
        ("_eye", "not a valid plugin name"),
        ("class", "is a Python keyword"),
        ("dermatology", "is taken by PrivaScan itself"),
    ],
)
def test_bad_names_are_refused_with_exit_code_2(tmp_path, name, words):
    result = run_cli("new-plugin", name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("privascan new-plugin: error: ") and words in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_existing_folder_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    result = run_cli("new-plugin", "fundus", "--directory", str(target))
    assert result.returncode == 2
    assert "already exists" in result.stderr and str(target) in result.stderr
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "keep me"


def test_a_plugin_template_cannot_replace_a_core_one(tiny_model_dir, scaffolded):
    """The repo's templates/ come first: a plugin adds templates, it does not swap the core's."""
    shadow = scaffolded / PACKAGE / "templates" / "partials" / "result.html"
    shadow.parent.mkdir(parents=True)
    shadow.write_text("SHADOWED")
    app = make_app(tiny_model_dir, PLUGIN_ALLOWLIST=(NAME,))
    try:
        env = app.jinja_env
        core = Path(env.loader.get_source(env, "partials/result.html")[1])
        assert core == REPO / "templates" / "partials" / "result.html"
        own = Path(env.loader.get_source(env, f"{NAME}/result.html")[1])
        assert own == scaffolded / PACKAGE / "templates" / NAME / "result.html"
    finally:
        app.extensions["privascan_worker"].stop()
