"""The built wheel is the whole product: installed (not editable) in a fresh venv, it serves a page and an analysis.

The wheel is built from a copy of the checkout (so the build's own files stay
out of it), installed with ``--no-deps --no-index`` into a new virtual
environment that sees the test environment's packages through a ``.pth``
file (nothing is downloaded), and started with that venv's own
``privascan serve`` from an empty folder, with no PYTHONPATH: the templates,
static files (vendored htmx included), prompt banks and plugin files it
serves can only come from the installed wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, photo_bytes

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
from liveserver import CARD_ID, Client, OutputTail, free_port, prepare_first_run_caches, server_environment, \
    wait_for_cards, wait_until_ready  # noqa: E402

sys.path.remove(str(SCRIPTS))

COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".whl", "node_modules", "__pycache__", "build", "*.egg-info", ".pytest_cache")
EXPECTED_DATA = [
    "webapp/templates/base.html", "webapp/templates/partials/card.html", "webapp/static/app.js",
    "webapp/static/vendor/htmx.min.js", "webapp/prompts/dermatology.toml", "webapp/prompts/chest_xray.toml",
    "webapp/data/body_sites.toml", "plugins/chest_xray/templates/chest_xray/result.html",
    "plugins/chest_xray/static/chest_xray.css", "webapp/gunicorn_conf.py", "webapp/server.py",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (REPO / "webapp" / "static" / "vendor" / "htmx.min.js").exists():
        pytest.skip("htmx is not vendored yet (`make setup` copies it into webapp/static/vendor)")
    source = tmp_path_factory.mktemp("source") / "privascan"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", str(source), "-w", str(out)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("privascan-*.whl")
    return built


def test_the_wheel_holds_templates_static_files_prompts_and_plugin_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in EXPECTED_DATA if name not in names]
    assert not missing, missing
    # Every data file the app serves or reads, not a sample: a new template or icon cannot be forgotten.
    shipped = {f"webapp/templates/{p.relative_to(REPO / 'templates').as_posix()}" for p in (REPO / "templates").rglob("*.html")}
    shipped |= {f"webapp/prompts/{p.name}" for p in (REPO / "prompts").glob("*.toml")}
    for folder in [REPO / "webapp" / "static", REPO / "webapp" / "data", REPO / "webapp" / "translations", *(REPO / "plugins").glob("*/templates"),
                   *(REPO / "plugins").glob("*/static")]:
        shipped |= {p.relative_to(REPO).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert not shipped - names, sorted(shipped - names)
    assert not any("__pycache__" in name or name.startswith("tests/") for name in names)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_wheel_serves_a_page_and_an_analysis(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    target = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    alone = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # no checkout in sight
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "--no-deps", "--no-index", "-q", str(wheel)], capture_output=True, text=True, check=False,
                               timeout=300, env=alone, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (target / "webapp" / "templates" / "base.html").exists()
    # The dependencies (flask, torch, ...) come from this test environment, after the install (so pip
    # never mistakes this environment's own PrivaScan for the wheel's); PrivaScan itself only from the wheel.
    (target / "privascan-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = server_environment()
    env.pop("PYTHONPATH", None)
    where = subprocess.run([venv / "bin" / "python", "-c", "import webapp, plugins.dermatology as d; print(webapp.__file__); print(d.PROMPTS)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(target)) for path in where), where  # the installed copy, not the checkout
    prepare_first_run_caches(server_environment())  # the demo model, built once per machine (not user data)

    port = free_port()
    server = subprocess.Popen([venv / "bin" / "privascan", "serve", "--bind", f"127.0.0.1:{port}"], cwd=empty, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputTail(server.stdout)
    try:
        wait_until_ready(port, 300, alive=lambda: server.poll() is None)
        person = Client(port, timeout=60)
        page = person.open_page()
        assert page.status == 200 and person.token
        assert "demo" in page.text.lower()  # the demo banner: results meaningless
        htmx = re.search(r'src="(/static/vendor/htmx\.min\.js\?v=[0-9a-f]{12})"', page.text)
        assert htmx, page.text[:2000]
        script = person.get(htmx.group(1), htmx=False)
        assert script.status == 200 and b"htmx" in script.body
        assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
        css = person.get("/plugins/chest_xray/static/chest_xray.css", htmx=False)
        assert css.status == 200 and b".urgent-callout" in css.body

        upload = person.upload((photo_bytes(3), "arm.jpg"))
        assert upload.status == 200, upload.text[:1000]
        (photo_id,) = CARD_ID.findall(upload.text)
        assert person.post(f"/photos/{photo_id}/analyze", [("analyse_anyway", "1")]).status == 200
        card = wait_for_cards(person, [photo_id], timeout=240)[photo_id]
        assert "Analysed" in card, card[:2000]
        assert person.get(f"/photos/{photo_id}/heatmap.png").status == 200
        assert person.get("/readyz", htmx=False).status == 200
        person.close()
    except Exception:
        print(output.text()[-4000:])
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert os.listdir(empty) == []  # the server wrote nothing where it ran
