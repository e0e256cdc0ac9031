"""The ``privascan`` command: one entry point, one module per subcommand.

Each module in ``webapp/commands/`` defines ``add_parser(subparsers)``, which
registers its subcommand and sets ``handler`` to a function taking the
parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("new_plugin", "evaluate", "adapt", "analyze", "train_detector")


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
