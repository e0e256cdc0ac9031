"""What the analysing subcommands share: the app's plugins and models, loaded as create_app does.

``privascan eval`` and ``privascan analyze`` read the same settings as the web
app (``webapp/config.py``: ``PRIVASCAN_MODEL``, ``PRIVASCAN_LESION_WEIGHTS``,
``PRIVASCAN_BANK_OVERRIDES``, ...), let options override a few of them, and
build the registry from the real plugins, so a command measures exactly what
the app would answer. Demo mode (``PRIVASCAN_DEMO_MODEL``) is not used here:
measuring random weights means nothing; ``--model`` takes any model folder.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from ..bank_overrides import BankOverridesError, apply_bank_overrides
from ..config import config_from_environment
from ..interfaces import ClinicalApp, LoadsAtStartup, ModelUnavailable, PromptBank, TemplateSet
from ..plugins import PluginError, Registry, build_registry, make_plugin_manager
from ..prompt_bank import PromptBankError


class CommandError(Exception):
    """A problem the user can fix; printed as ``privascan CMD: error: ...`` with exit status 2."""


def reports_errors(prog: str) -> Callable:
    """Turn CommandError (and the known user-facing errors) into a message and exit status 2."""

    def decorate(handler):
        @functools.wraps(handler)
        def wrapped(args) -> int:
            from ..evaluation.dataset import DatasetError

            try:
                return handler(args)
            except (CommandError, DatasetError, PromptBankError, BankOverridesError) as exc:
                print(f"privascan {prog}: error: {exc}", file=sys.stderr)
                return 2

        return wrapped

    return decorate


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and clinical app (defaults: the web app's settings)")
    group.add_argument("--model", help="hub id or local folder of the model (default: PRIVASCAN_MODEL, else google/medsiglip-448)")
    group.add_argument("--app", help="clinical app (default: PRIVASCAN_CLINICAL_APP, else dermatology)")
    group.add_argument("--template-set", help="template set of the app's bank, e.g. clinical or dermoscopy (default: its first)")
    group.add_argument(
        "--lesion-weights",
        help="lesion-trained YOLO weights for the localizer (default: PRIVASCAN_LESION_WEIGHTS; unset: the classical localizer)",
    )


@dataclass
class Runtime:
    config: dict
    registry: Registry
    clinical_app: ClinicalApp
    bank: PromptBank
    template_set: TemplateSet

    @property
    def classifier(self):
        return self.registry.classifiers[self.clinical_app.classifier]

    @property
    def localizer(self) -> str:
        return self.clinical_app.detector or "none"

    def load_models(self, explain: bool = False, quiet: bool = False) -> None:
        """Load the app's detector, classifier (and explainer): the slow part, done after every check."""
        registry, clinical_app = self.registry, self.clinical_app
        parts = [registry.detectors.get(clinical_app.detector)] if clinical_app.detector else []
        if explain and clinical_app.explainer:
            parts.append(registry.explainers[clinical_app.explainer])
        try:
            with _transformers_progress(not quiet):
                for part in parts:
                    if isinstance(part, LoadsAtStartup):
                        part.load()
                registry.classifiers[clinical_app.classifier].load()
        except ModelUnavailable as exc:
            raise CommandError(f"{exc.reason} {exc.advice}".strip()) from exc


@contextlib.contextmanager
def _transformers_progress(enabled: bool):
    """transformers draws a weight-loading bar on stderr; --quiet hides it (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            hf_logging.enable_progress_bar()


def load_runtime(args: argparse.Namespace) -> Runtime:
    """Config, registry (overrides applied), the chosen app and its template set; models not loaded yet."""
    config = config_from_environment()
    if args.model:
        config["MODEL"] = args.model
    if args.app:
        config["CLINICAL_APP"] = args.app
    if args.lesion_weights:
        config["LESION_WEIGHTS"] = args.lesion_weights
    Image.MAX_IMAGE_PIXELS = config["MAX_IMAGE_PIXELS"]  # as create_app does
    try:
        registry = build_registry(make_plugin_manager(config), config)
        apply_bank_overrides(registry, config)
    except (PluginError, ValueError) as exc:  # bank, overrides and weights-path errors are ValueErrors
        raise CommandError(str(exc)) from exc
    name = config["CLINICAL_APP"]
    if name not in registry.apps:
        raise CommandError(f"no clinical app {name!r}; installed: {', '.join(sorted(registry.apps))}")
    clinical_app = registry.apps[name]
    bank = registry.banks[clinical_app.bank]
    try:
        template_set = bank.template_set(args.template_set)
    except KeyError:
        raise CommandError(
            f"bank '{bank.name}' has no template set {args.template_set!r}; "
            f"it has: {', '.join(t.id for t in bank.template_sets)}"
        ) from None
    return Runtime(config, registry, clinical_app, bank, template_set)


class Progress:
    """A progress bar on stderr (tqdm), silent with --quiet; stdout stays clean for results."""

    def __init__(self, total: int, description: str, quiet: bool = False):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="image", file=sys.stderr, disable=quiet, leave=False)

    def step(self) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
