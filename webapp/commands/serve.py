"""privascan serve: the production server, as ``make run`` starts it.

gunicorn with PrivaScan's settings (``webapp/gunicorn_conf.py``): one worker
process holding the model and every session, whose event loop reads whole
requests (header and body timeouts, bodies in memory) before an app thread
runs them (``webapp/server.py``). Listens on PRIVASCAN_BIND (default
127.0.0.1:5000) unless ``--bind`` says otherwise. Works the same from a
source checkout and from an installed wheel.
"""

from __future__ import annotations

import sys

APP = "webapp:create_app()"  # gunicorn calls the factory in the worker, after the fork
CONFIG = "python:webapp.gunicorn_conf"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the production web server (gunicorn)",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("--bind", help="address:port to listen on (default: PRIVASCAN_BIND, else 127.0.0.1:5000)")
    parser.set_defaults(handler=run)


def gunicorn_arguments(bind: str | None) -> list[str]:
    return ["--config", CONFIG, *(["--bind", bind] if bind else []), APP]


def run(args) -> int:
    # Installed code is compiled at install time; nothing is to be written next to it at run time.
    sys.dont_write_bytecode = True
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["privascan serve", *gunicorn_arguments(args.bind)]
    WSGIApplication("%(prog)s [OPTIONS]").run()  # returns only when gunicorn stops (it exits the process)
    return 0
