"""The hooks a PrivaScan plugin can implement.

Each ``register_*`` hook returns a list; the core flattens the lists of every
plugin. Every hook takes ``config`` (the Flask app's config mapping); pluggy
lets an implementation leave out arguments it does not need. The exception is
``register_commands`` (as in datasette and sqlite-utils): it receives the
``privascan`` command's argparse subparsers and adds its own subcommands. ``alert_raised``
is a notification: the core ships no implementation of it, so nothing is
forwarded anywhere unless an operator installs a plugin that does.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("privascan")
hookimpl = HookimplMarker("privascan")


@hookspec
def register_clinical_apps(config):
    """Return a list of ClinicalApp records, each tying a bank, detector, classifier and explainer together."""


@hookspec
def register_prompt_banks(config):
    """Return a list of PromptBank objects (usually read with webapp.prompt_bank.load_prompt_bank)."""


@hookspec
def register_detectors(config):
    """Return a list of Detector objects that locate the finding in a photo."""


@hookspec
def register_classifiers(config):
    """Return a list of Classifier objects that score a crop against a prompt bank."""


@hookspec
def register_explainers(config):
    """Return a list of Explainer objects that classify and return a heatmap in one pass."""


@hookspec
def register_commands(subparsers):
    """Add subcommands to ``privascan``: call ``subparsers.add_parser(...)`` and set ``handler`` (returns an exit code); return nothing."""


@hookspec
def alert_raised(alert, config):
    """Receive one live-scan alert (a webapp.live.Alert: words and numbers, never an image) to forward to a clinic system; return nothing."""
