"""The scale-out fleet for tests and scripts: real redis-server, gunicorn web replicas, ``privascan worker``.

The processes are the production ones (``gunicorn --config
webapp/gunicorn_conf.py`` and ``privascan worker``) with the tiny model, on
loopback ports; ``AlternatingBrowser`` is one person whose requests go to the
next replica in turn (a load balancer without sticky sessions).
"""

from __future__ import annotations

import collections
import http.cookiejar
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.helpers import multipart
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')
CARD = re.compile(r'<article id="photo-([^"]+)"')


def environment(redis_url: str, model_dir: str, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        PRIVASCAN_REDIS_URL=redis_url, PRIVASCAN_SECRET_KEY="k" * 64, PRIVASCAN_MODEL=model_dir,
        PRIVASCAN_PLUGINS="", PRIVASCAN_SECURE_COOKIE="0", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), TORCHINDUCTOR_CACHE_DIR=f"/dev/shm/privascan-torchinductor-{os.getuid()}",
        **extra,
    )
    return env


def start_worker(env: dict, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*wrap, sys.executable, "-m", "webapp.cli", "worker"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_replica(env: dict, port: int, wrap: tuple[str, ...] = (), args: tuple[str, ...] = (),
                  stdout_too: bool = False) -> subprocess.Popen:
    """A gunicorn web replica; ``stdout_too``: its stdout (an access log on "-") and stderr share one pipe."""
    outputs = ({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if stdout_too
               else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE})
    return subprocess.Popen([*wrap, sys.executable, "-m", "gunicorn", "--config", "webapp/gunicorn_conf.py",
                             "--bind", f"127.0.0.1:{port}", *args, "wsgi:app"], cwd=REPO, env=env, **outputs)


def drain(process: subprocess.Popen, lines: int = 400, divert=None) -> subprocess.Popen:
    """Read the process's stderr into memory (its last ``lines``): a full pipe would block a chatty worker.

    ``divert``: called with each line (bytes); a true answer keeps the line out of the tail.
    """
    process.tail = collections.deque(maxlen=lines)

    def read() -> None:
        for line in process.stderr or process.stdout:
            if divert is None or not divert(line):
                process.tail.append(line)

    threading.Thread(target=read, daemon=True).start()
    return process


def output_of(process: subprocess.Popen) -> str:
    if hasattr(process, "tail"):
        time.sleep(0.2)  # the reader's last lines
        return b"".join(process.tail).decode(errors="replace")[-3000:]
    return (process.stderr or process.stdout).read().decode(errors="replace")[-3000:]


def wait_for_worker(client: redis.Redis, process: subprocess.Popen, count: int = 1, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = [b for b in client.mget(list(client.scan_iter("privascan:worker:*")) or ["none"]) if b]
        if sum(b'"ready"' in b for b in beats) >= count:
            return
        if process.poll() is not None:
            raise RuntimeError("the worker stopped:\n" + output_of(process))
        time.sleep(0.3)
    raise RuntimeError("no worker became ready")


def wait_for_http(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.css", timeout=5).read()
            return
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None:
                raise RuntimeError("a replica stopped:\n" + output_of(process))
            time.sleep(0.3)
    raise RuntimeError("a replica did not answer")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        if Path(process.args[0]).name == "strace":
            # strace would detach and leave the server running: stop what it traces, it then exits too.
            for child in _children(process.pid):
                os.kill(child, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


class AlternatingBrowser:
    """One person's cookies, each request sent to the next replica in turn."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.turn = 0
        self.jar = http.cookiejar.CookieJar()  # host cookies: 127.0.0.1 on any port, as a shared domain would be
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.token = ""
        self.replicas_used: set[int] = set()

    def request(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None,
                htmx: bool = True):
        port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        self.replicas_used.add(port)
        headers = {"HX-Request": "true"} if htmx else {}
        if method != "GET":
            headers["X-CSRF-Token"] = self.token
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=120) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def open_page(self) -> str:
        status, body, _ = self.request("GET", "/", htmx=False)
        assert status == 200
        self.token = CSRF.search(body.decode()).group(1)
        return body.decode()


@contextmanager
def fleet(redis_url: str, model_dir: str, replicas: int = 2, workers: int = 1, wrap: tuple[str, ...] = (),
          replica_args: tuple[str, ...] = (), replica_lines=None, **extra):
    """Start ``workers`` workers and ``replicas`` web replicas; yields (ports, processes (workers first), env).

    ``replica_args``: more gunicorn options (``--keep-alive 0``: a new connection per request).
    ``replica_lines``: sees every line the replicas print, stdout included (scripts/load_test.py's access log).
    """
    env = environment(redis_url, model_dir, **extra)
    client = redis.Redis.from_url(redis_url)
    processes = []
    try:
        for _ in range(workers):
            processes.append(drain(start_worker(env, wrap)))
        ports = [free_port() for _ in range(replicas)]
        for port in ports:
            processes.append(drain(start_replica(env, port, wrap, replica_args, stdout_too=replica_lines is not None),
                                   divert=replica_lines))
        for worker in processes[:workers]:
            wait_for_worker(client, worker, count=workers)
        for port, process in zip(ports, processes[workers:]):
            wait_for_http(port, process)
        yield ports, processes, env
    finally:
        for process in processes:
            stop(process)
        client.close()


def wait_for_card(browser: AlternatingBrowser, photo_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = browser.request("GET", f"/photos/{photo_id}/card")
        assert status == 200
        html = body.decode()
        if 'data-state="done"' in html or 'data-state="error"' in html:
            return html
        time.sleep(0.3)
    raise AssertionError("the analysis did not finish")


def upload_fields(content: bytes, name: str) -> dict:
    body = multipart([("photos", (content, name)), ("last_modified", "")])
    return {"data": body["data"], "content_type": body["content_type"]}


def frame_fields(content: bytes) -> dict:
    body = multipart([("frame", (content, "frame.jpg"))])
    return {"data": body["data"], "content_type": body["content_type"]}


class RoundRobinProxy:
    """A loopback TCP load balancer without stickiness: each new connection goes to the next replica.

    With the replicas answering ``Connection: close`` (gunicorn ``--keep-alive
    0``) every request is a new connection, so a browser's requests alternate
    between replicas. Bytes are relayed in memory; ``requests`` counts, per
    replica port, the connections that carried a request.
    """

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.requests: collections.Counter[int] = collections.Counter()
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, name="round-robin-proxy", daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                port = self.ports[next(self._turn) % len(self.ports)]
            threading.Thread(target=self._relay, args=(downstream, port), daemon=True).start()

    def _relay(self, downstream: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port))
        except OSError:
            downstream.close()
            return

        def pump(source: socket.socket, target: socket.socket, counts: bool) -> None:
            first = True
            try:
                while chunk := source.recv(65536):
                    if counts and first:
                        with self._lock:
                            self.requests[port] += 1
                        first = False
                    target.sendall(chunk)
            except OSError:
                pass
            finally:
                try:
                    target.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=pump, args=(upstream, downstream, False), daemon=True)
        back.start()
        pump(downstream, upstream, True)
        back.join(120)
        upstream.close()
        downstream.close()

