"""Gunicorn settings: one worker process (one model copy), several threads.

Used by ``make run``, ``privascan serve`` (as ``python:webapp.gunicorn_conf``)
and the tests (``--config webapp/gunicorn_conf.py``; a ``--bind`` on the
command line still wins over PRIVASCAN_BIND). Nothing here may write to the
disk; ``scripts/strace_disk_writes.py`` runs this configuration under strace
and counts every write-mode file call.
"""

import os
import sys

# No __pycache__ folders written next to the code (the Makefile's run target
# also sets PYTHONDONTWRITEBYTECODE=1, which covers gunicorn's own imports;
# this covers the app, imported later in the forked worker, and webapp.config below).
sys.dont_write_bytecode = True

from webapp.config import config_from_environment  # noqa: E402 - after the line above

_settings = config_from_environment()

bind = _settings["BIND"]  # PRIVASCAN_BIND, default 127.0.0.1:5000
workers = 1  # the model and every session live in this one process's memory
threads = 8  # app threads; connections themselves hold none (webapp/server.py)
# Requests are read whole on an event loop (header and body timeouts, bodies in
# memory) before a thread runs the app: slow or idle clients cannot hold the
# threads, as they can with gunicorn's gthread worker. See webapp/server.py.
worker_class = "webapp.server.BufferingWorker"
timeout = 120
# gunicorn believes X-Forwarded-Proto and friends from these addresses (its
# default is 127.0.0.1, so a forged header from any local client earned
# HSTS). Only behind the proxy the operator declared (PRIVASCAN_BEHIND_PROXY=1),
# and there the app's ProxyFix reads them anyway (webapp/security.py).
forwarded_allow_ips = "127.0.0.1,::1" if _settings["BEHIND_PROXY"] else ""
# The heartbeat file goes to shared memory, not the disk.
worker_tmp_dir = "/dev/shm"
# gunicorn >= 25 opens a control socket in ~/.gunicorn (creating the folder);
# PrivaScan is managed by signals, so no socket and no folder.
control_socket_disable = True
# Access logs carry paths with photo ids, not names; keep them off anyway:
# a clinic that wants them can turn them on with --access-logfile.
accesslog = None
errorlog = "-"

# Importing torch creates its compile cache folder (and first probes the temp
# folder by writing a throwaway file there). PrivaScan never compiles a model,
# so the folder only needs to exist: put it in shared memory.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", f"/dev/shm/privascan-torchinductor-{os.getuid()}")
# torch's OpenMP threads busy-wait between operations by default, taking the
# cores the web threads need; sleeping instead kept pages, polls and pictures
# quick under load and even raised the analyses per minute (scripts/load_test.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _drop_server_header() -> None:
    """Answer without a ``Server`` header: gunicorn names itself in one on every
    response (dropping the app's own) and has no setting to stop it."""
    from gunicorn.http import wsgi

    default_headers = wsgi.Response.default_headers
    if getattr(default_headers, "privascan", False):
        return

    def without_server(self):
        return [line for line in default_headers(self) if not line.lower().startswith("server:")]

    without_server.privascan = True
    wsgi.Response.default_headers = without_server


_drop_server_header()
