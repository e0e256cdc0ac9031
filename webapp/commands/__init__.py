"""Subcommands of the ``privascan`` command line (see webapp/cli.py)."""
