"""``privascan new-plugin NAME``: write a working plugin package for a new clinical app.

The package it writes is complete and installable: a pyproject with an entry
point in the ``privascan`` group, hook implementations (a ClinicalApp that
reuses the MedSigLIP classifier and Grad-CAM explainer by name, and a prompt
bank read from a TOML file inside the package), a valid two-condition bank,
a result template and a stylesheet shipped with the package, and tests that
pass as written. Nothing is ever overwritten: an existing folder is refused.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from pathlib import Path
from string import Template

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Names the built-in plugins use: a plugin with one of these names would
# clash with them at start-up (two clinical apps or banks of one name).
RESERVED = frozenset({"dermatology", "chest_xray", "medsiglip", "plugins", "webapp", "privascan"})


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "new-plugin",
        help="write a new clinical-app plugin package",
        description="Write a plugin package for a new clinical app (modality): pyproject with a 'privascan' entry "
        "point, hook implementations, a prompt bank, a result template, a stylesheet and tests.",
    )
    parser.add_argument("name", help="the plugin's name: a lower-case Python identifier, e.g. 'retina'")
    parser.add_argument(
        "--directory", metavar="DIR", help="folder to create for the package (default: ./privascan-NAME); must not exist"
    )
    parser.add_argument("--title", help="name shown in the modality picker (default: from NAME)")
    parser.set_defaults(handler=run)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a plugin, or None when it can."""
    if not NAME_PATTERN.match(name):
        return (
            f"{name!r} is not a valid plugin name: use a lower-case Python identifier of at most 40 characters "
            "(letters a-z, digits and '_', starting with a letter), e.g. 'retina' or 'eye_fundus'"
        )
    if keyword.iskeyword(name):
        return f"{name!r} is a Python keyword; choose another name"
    if name in RESERVED:
        return f"{name!r} is taken by PrivaScan itself; choose another name"
    return None


def run(args) -> int:
    problem = name_problem(args.name)
    if problem is None and args.title is not None and not args.title.strip():
        problem = "--title must not be empty"
    target = Path(args.directory) if args.directory else Path.cwd() / f"privascan-{args.name}"
    if problem is None and target.exists():
        problem = f"{target} already exists; choose another --directory (nothing was written)"
    if problem:
        print(f"privascan new-plugin: error: {problem}", file=sys.stderr)
        return 2
    title = args.title.strip() if args.title else args.name.replace("_", " ").capitalize()
    written = write_plugin(target, args.name, title)
    print(f"Wrote the plugin '{args.name}' to {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print(
        "\nNext: edit the prompt bank and the ClinicalApp, then\n"
        f"  cd {target}\n"
        "  pip install -e .          # PrivaScan then finds it through its entry point\n"
        "  python -m pytest          # the plugin's own tests\n"
        f"then restart PrivaScan and pick {title!r} in the modality picker."
    )
    return 0


def write_plugin(target: Path, name: str, title: str) -> list[Path]:
    """Write the package to ``target`` (which must not exist) and return the files written."""
    values = {
        "name": name,
        "package": f"privascan_{name}",
        "title": title,
        "title_toml": json.dumps(title),  # a TOML basic string is a JSON string
        "title_py": repr(title),
    }
    target.mkdir(parents=True)
    written = []
    for relative, text in FILES.items():
        path = target / Template(relative).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
        written.append(path)
    return written


FILES: dict[str, str] = {}

FILES["pyproject.toml"] = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "privascan-$name"
version = "0.1.0"
description = "PrivaScan plugin: the $name clinical app."
requires-python = ">=3.11"
# Installed into PrivaScan's own environment (where 'privascan' is installed).
dependencies = ["privascan"]

# This is how PrivaScan finds the plugin: an entry point in the group
# 'privascan'. Its name ('$name') is what PRIVASCAN_PLUGINS allow-lists.
[project.entry-points.privascan]
$name = "$package"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.setuptools.package-data]
$package = ["prompts/*.toml", "templates/**/*.html", "static/**/*", "translations/**/*.po"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
'''

FILES["README.md"] = '''\
# privascan-$name

A PrivaScan plugin that adds the clinical app **$title** (written by
`privascan new-plugin $name`).

- `$package/__init__.py`: the hooks: the ClinicalApp record (title, parts,
  wording, disclaimer) and the prompt bank.
- `$package/prompts/$name.toml`: the conditions, as data. PrivaScan validates
  it at start-up and refuses to start with a message naming the condition.
- `$package/templates/$name/result.html`: how a result is shown.
- `$package/static/$name.css`: served at `/plugins/$name/static/$name.css`.
- `tests/test_$name.py`: run with `python -m pytest`.

Install it into PrivaScan's environment with `pip install -e .`; restart
PrivaScan and pick "$title" in the modality picker. See PrivaScan's
`docs/plugins.md`.
'''

FILES["$package/__init__.py"] = '''\
"""$title: a PrivaScan clinical app plugin.

PrivaScan finds this package through the entry point in pyproject.toml. It
brings no model: the ClinicalApp below names the MedSigLIP classifier and its
Grad-CAM explainer, which PrivaScan's built-in plugins register. Change the
prompt bank (prompts/$name.toml), the wording below and the result template
(templates/$name/result.html) to make it yours.
"""

from __future__ import annotations

from pathlib import Path

from webapp import hookimpl
from webapp.interfaces import ClinicalApp
from webapp.prompt_bank import load_prompt_bank

BANK_FILE = Path(__file__).resolve().parent / "prompts" / "$name.toml"


@hookimpl
def register_clinical_apps(config):
    return [
        ClinicalApp(
            name="$name",
            title=$title_py,
            bank="$name",  # the 'name' in prompts/$name.toml
            classifier="medsiglip",
            explainer="medsiglip-gradcam",
            detector=None,  # no localizer: the whole picture, padded to a square
            subject="finding",
            disclaimer=(
                "This is a triage aid, not a diagnosis. Have a qualified clinician review every image "
                "and anything that worries you."
            ),
            result_template="$name/result.html",  # in this package's templates/ folder
        )
    ]


@hookimpl
def register_prompt_banks(config):
    return [load_prompt_bank(BANK_FILE)]
'''

FILES["$package/prompts/$name.toml"] = '''\
# Prompt bank of the $name plugin. Schema: PrivaScan's prompts/dermatology.toml
# and docs/plugins.md. PrivaScan validates this file at start-up: a missing
# label, a duplicate label or code, a threshold outside [0, 1], an unknown
# group tag or a template without exactly one {} stops it with a message.

name = "$name"
title = $title_toml
# Every group tag the conditions and rules below may use.
group_tags = ["normal", "abnormal"]

[rules]
# Groups whose conditions make a result "high concern" (and are combined).
high_risk_groups = ["abnormal"]
# Groups that make a result "moderate concern".
watch_groups = []

[template_sets.standard]
label = "Standard image"
templates = [
    "A medical image showing {}.",
    "A clinical image with {}.",
]

[[conditions]]
id = "no_finding"
label = "No finding"
groups = ["normal"]
descriptions = [
    "normal appearance with no visible abnormality",
    "an unremarkable study",
]
summary = """
Nothing abnormal was matched in this image. This is not a diagnosis: if you have symptoms, \\
see a doctor.
"""
alert_threshold = 1.0

[[conditions]]
id = "abnormal_finding"
label = "Abnormal finding"
groups = ["abnormal"]
descriptions = [
    "a visible abnormality",
    "an abnormal finding that needs a clinician's review",
]
icd10 = "R93.8"  # abnormal findings on diagnostic imaging of other body structures
summary = """
The image resembles an abnormal finding. Have a doctor review it.
"""
alert_threshold = 0.5
'''

FILES["$package/templates/$name/result.html"] = '''\
{# The result of one $name image: PrivaScan's result skeleton (partials/result_base.html) with this modality's wording.
   Override more blocks (see the skeleton's comment), or change the wording with the parts' keyword arguments. #}
{% extends "partials/result_base.html" %}
{% block stylesheet %}<link rel="stylesheet" href="{{ url_for('plugin_static.static_file', plugin='$name', filename='$name.css') }}">{% endblock %}
{% block section_class %} result-$name{% endblock %}
{# Every visible string is marked for translation (_() or {% trans %}); tests/test_i18n.py in PrivaScan checks its own templates
   the same way. Ship translations in translations/<code>/LC_MESSAGES/messages.po beside templates/ (docs/plugins.md). #}
{% block title %}{{ _("%(app)s result for %(name)s", app=clinical_app.title, name=photo.name) }}{% endblock %}
{% block headline %}{{ parts.headline(reading, risk_words={"high": _("Abnormal finding suspected"), "moderate": _("Worth a look"), "low": _("Nothing abnormal matched")}) }}{% endblock %}
{% block ranking %}{{ parts.ranking(photo, clinical_app, reading, thresholds, explaining, heading=_("All findings, most likely first")) }}{% endblock %}
'''

FILES["$package/static/$name.css"] = '''\
/* Styles of the $name plugin, served at /plugins/$name/static/$name.css (same origin: the CSP allows it). */
.result-$name .headline { border-left-style: double; }
'''

FILES["tests/test_$name.py"] = '''\
"""The $name plugin: its bank is valid, its hooks register a complete clinical app, its template parses."""

from __future__ import annotations

from pathlib import Path

import jinja2
from webapp.plugins import build_registry, make_plugin_manager
from webapp.prompt_bank import load_prompt_bank

import $package

PACKAGE = Path($package.__file__).resolve().parent
# The MedSigLIP plugin (built into PrivaScan) provides the classifier and explainer the app names.
CONFIG = {"DEFAULT_PLUGINS": ("plugins.medsiglip", "$package"), "PLUGIN_ALLOWLIST": (), "MODEL": "unused", "HF_TOKEN": None}


def test_bank_loads_and_validates():
    bank = load_prompt_bank($package.BANK_FILE)
    assert bank.name == "$name"
    assert len(bank.conditions) >= 2
    assert all(condition.summary for condition in bank.conditions)


def test_plugin_registers_its_clinical_app():
    registry = build_registry(make_plugin_manager(CONFIG), CONFIG)
    app = registry.apps["$name"]
    assert app.title == $title_py
    assert registry.banks[app.bank].name == "$name"
    assert app.classifier in registry.classifiers and app.explainer in registry.explainers


def test_result_template_is_shipped_and_parses():
    registry = build_registry(make_plugin_manager(CONFIG), CONFIG)
    template = PACKAGE / "templates" / registry.apps["$name"].result_template
    jinja2.Environment().parse(template.read_text(encoding="utf-8"))
    assert (PACKAGE / "static" / "$name.css").is_file()
'''
