"""The ``privascan`` command: one entry point, one module per subcommand.

Each module in ``webapp/commands/`` defines ``add_parser(subparsers)``, which
registers its subcommand and sets ``handler`` to a function taking the
parsed arguments and returning an exit code. Plugins add theirs through the
``register_commands`` hook (the dermatology plugin brings ``train-detector``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import config_from_environment
from .plugins import make_plugin_manager

COMMANDS = ("new_plugin", "evaluate", "adapt", "analyse", "worker", "prepare", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privascan", description="PrivaScan: privacy-first clinical image triage.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"webapp.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"webapp.commands.{name}":
                raise
            continue  # that subcommand is not part of this build
        module.add_parser(subparsers)
    make_plugin_manager(config_from_environment()).hook.register_commands(subparsers=subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
