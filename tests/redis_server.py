"""A real redis-server for the tests: loopback, a free port, persistence off.

Debian's redis-server (``make test`` installs it when missing). Each server
runs from a fresh temporary directory and is told never to snapshot or
append to a file, exactly the settings docs/scaling.md asks of operators.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def redis_server(*extra: str, persistence: bool = False, port: int | None = None, wrap: tuple[str, ...] = ()):
    """Run redis-server; yields its redis:// URL. ``persistence=True`` leaves snapshots on (for the refusal test)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="privascan-redis-")
    arguments = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                 "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning", "--logfile", ""]
    arguments += ["--save", "3600 1", "--appendonly", "no"] if persistence else ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*wrap, *arguments, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {process.stderr.read().decode(errors='replace')}")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        if wrap:  # under strace: stop redis-server itself, strace then exits with it
            client_for_shutdown = redis.Redis.from_url(url)
            try:
                client_for_shutdown.shutdown(nosave=True)
            except redis.RedisError:
                pass
        else:
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
