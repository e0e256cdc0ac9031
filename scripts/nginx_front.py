"""Debian's nginx in front of a server on loopback, with PrivaScan's own proxy settings.

Shared by ``slow_clients.py``, ``strace_disk_writes.py --through-nginx`` and
the tests. nginx runs as the current user in the foreground with a config
generated in a temporary folder that holds nothing but that config: its
``location`` is ``deploy/nginx/privascan-proxy.conf``, included unchanged,
so what is tested is what is deployed. The pid file and nginx's temp
folders are in /dev/shm (memory), the error log goes to stderr and there is
no access log. ``make nginx`` installs nginx when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROXY_SNIPPET = REPO / "deploy" / "nginx" / "privascan-proxy.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """\
worker_processes 1;
daemon off;
pid {runtime}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    server_tokens off;
    # Where nginx would spool bodies and responses if it ever did (it does not:
    # see privascan-proxy.conf); in memory, so a trace would show them as such.
    client_body_temp_path {runtime}/body;
    proxy_temp_path {runtime}/proxy;
    fastcgi_temp_path {runtime}/fastcgi;
    uwsgi_temp_path {runtime}/uwsgi;
    scgi_temp_path {runtime}/scgi;
    upstream privascan {{
        server 127.0.0.1:{upstream};
        keepalive 16;
        # Under the app's PRIVASCAN_HEADER_TIMEOUT (10 s), which also closes idle connections:
        # nginx must never reuse one the app is closing (a POST on it would fail with 502).
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port};
        include {snippet};
    }}
}}
"""


def nginx_problem() -> str | None:
    """Why nginx cannot run here, or None."""
    if not os.path.exists(NGINX):
        return "nginx is not installed (`make nginx` or `apt-get install -y nginx`)"
    if not os.path.isdir("/dev/shm"):
        return "/dev/shm is missing (nginx's pid file and temp folders must be in memory)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def nginx_front(upstream_port: int, wrap: tuple[str, ...] = (), port: int | None = None):
    """Run nginx on a free loopback port proxying to ``upstream_port``; yields (port, runtime folder in /dev/shm)."""
    port = port or free_port()
    config_dir = Path(tempfile.mkdtemp(prefix="privascan-nginx-conf-"))  # the config and nothing else
    runtime = Path(tempfile.mkdtemp(prefix="privascan-nginx-", dir="/dev/shm"))
    runtime.chmod(0o755)  # started as root, nginx's workers run as nobody and must reach its temp folders
    config = config_dir / "nginx.conf"
    config.write_text(CONFIG.format(runtime=runtime, upstream=upstream_port, port=port, snippet=PROXY_SNIPPET))
    # -e: the error log nginx opens before reading its config (else its compiled-in file);
    # -p: the prefix, so nothing is looked for under /var/lib/nginx or /var/log/nginx.
    command = [*wrap, NGINX, "-e", "stderr", "-p", str(runtime), "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"nginx did not start: {process.stderr.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.05)
        yield port, runtime
    finally:
        if process.poll() is None:
            pid_file = runtime / "nginx.pid"
            if wrap and pid_file.exists():
                # Under strace: stop nginx itself (strace, told to stop, would only detach), strace exits with it.
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            else:
                process.terminate()  # nginx: fast shutdown
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
