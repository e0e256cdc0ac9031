"""Packaging beyond what pyproject.toml can say: the core's templates and the prompt banks in the wheel.

The repository keeps ``templates/`` and ``prompts/`` at its top level (the
layout in docs and DESIGN.md). An installed PrivaScan needs them too, so the
wheel carries them inside the ``webapp`` package, as ``webapp/templates`` and
``webapp/prompts`` (``package_dir`` maps the folders there); everything else
is in pyproject.toml. ``webapp/resources.py`` finds them in either place.
"""

from setuptools import find_namespace_packages, setup

SHIPPED_FOLDERS = {"webapp.templates": "templates", "webapp.prompts": "prompts"}

setup(
    # plugins/ has no __init__.py (a namespace package), hence find_namespace_packages.
    packages=find_namespace_packages(include=["webapp*", "plugins*"], exclude=["*__pycache__*"]) + list(SHIPPED_FOLDERS),
    package_dir=SHIPPED_FOLDERS,
)
