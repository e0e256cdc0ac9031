"""The production server on loopback: slow clients, forwarded headers, oversized requests, timeouts.

Real processes only: ``gunicorn --config webapp/gunicorn_conf.py wsgi:app``
(the worker in webapp/server.py) and, where named, Debian's nginx with
deploy/nginx/privascan-proxy.conf in front (scripts/nginx_front.py). The
slow-client runs are ``scripts/slow_clients.py``; their figures are printed
here too, and the assertions are on counts (failures, connections), never
on times. ``-m "not slow"`` skips the long ones.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
from liveserver import OutputTail, free_port, gunicorn_command, server_environment  # noqa: E402
from nginx_front import nginx_front, nginx_problem  # noqa: E402

sys.path.remove(str(SCRIPTS))

FIGURES = re.compile(r"^slow_clients (?P<fields>.*)$", re.MULTILINE)


@contextlib.contextmanager
def real_server(*gunicorn_arguments: str, output: list | None = None, **env: str):
    """The production gunicorn on a free port (no model loaded: these tests never analyse)."""
    port = free_port()
    environment = server_environment(PRIVASCAN_LOAD_MODELS="0", **env)
    process = subprocess.Popen(gunicorn_command(port, *gunicorn_arguments), cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = OutputTail(process.stdout)
    if output is not None:
        output.append(tail)
    output = tail
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer(port, "GET", "/healthz")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{output.text()[-3000:]}")
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def answer(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def run_slow_clients(capsys, *arguments: str) -> dict[str, str]:
    # 12 s of attack (the script's default is 20): two header timeouts' worth, every connection reopened at least once.
    done = subprocess.run([sys.executable, str(SCRIPTS / "slow_clients.py"), "--seconds", "12", *arguments], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=400)
    report = done.stdout + done.stderr
    with capsys.disabled():  # the figures belong in the test output, passed or not
        print("\n" + "\n".join(line for line in done.stdout.splitlines() if not line.startswith("  failed:")))
    found = FIGURES.search(done.stdout)
    assert found, report
    figures = dict(field.split("=", 1) for field in found.group("fields").split())
    assert done.returncode == 0, report
    return figures


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_hundred_slow_connections_do_not_stop_the_pages(capsys):
    figures = run_slow_clients(capsys)
    assert figures["via"] == "direct"
    assert figures["failures"] == "0"
    assert int(figures["requests"]) > 100  # ten visitors kept getting pages the whole time
    assert int(figures["opened"]) >= 200 and int(figures["open_mean"]) >= 150  # the slow connections were really open


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_hundred_slow_connections_through_nginx(capsys):
    problem = nginx_problem()
    if problem:
        pytest.skip(problem)
    figures = run_slow_clients(capsys, "--through-nginx")
    assert figures["via"] == "nginx"
    assert figures["failures"] == "0"
    assert int(figures["requests"]) > 100
    assert int(figures["opened"]) >= 200 and int(figures["open_mean"]) >= 150


def test_privascan_serve_listens_on_privascan_bind():
    port = free_port()
    env = server_environment(PRIVASCAN_LOAD_MODELS="0", PRIVASCAN_BIND=f"127.0.0.1:{port}")
    process = subprocess.Popen([sys.executable, "-m", "webapp.cli", "serve"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputTail(process.stdout)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, headers, body = answer(port, "GET", "/healthz")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, output.text()[-3000:]
                time.sleep(0.2)
        assert status == 200 and b"alive" in body
        assert "server" not in headers  # no banner, from gunicorn or Tornado
        assert "webapp.server.BufferingWorker" in output.text()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_forged_forwarded_proto_gets_no_hsts_unless_behind_the_proxy():
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example"}
    with real_server(PRIVASCAN_BEHIND_PROXY="0") as port:
        status, headers, _ = answer(port, "GET", "/", forged)
        assert status == 200
        assert "strict-transport-security" not in headers
        for path in ("//", "//evil.example/x", "/static//app.css"):  # and no redirect built from the Host header
            status, headers, _ = answer(port, "GET", path, {"Host": "evil.example"})
            assert not 300 <= status < 400 and "location" not in headers, (path, status, headers.get("location"))
    # The same request does earn HSTS when the operator declared a proxy: the header is what matters.
    with real_server(PRIVASCAN_BEHIND_PROXY="1") as port:
        status, headers, _ = answer(port, "GET", "/", forged)
        assert status == 200
        assert headers.get("strict-transport-security") == "max-age=31536000"


def test_nginx_replaces_forged_forwarded_headers():
    problem = nginx_problem()
    if problem:
        pytest.skip(problem)
    with real_server(PRIVASCAN_BEHIND_PROXY="1") as upstream, nginx_front(upstream) as (port, _):
        status, headers, _ = answer(port, "GET", "/", {"X-Forwarded-Proto": "https"})
        assert status == 200
        assert "strict-transport-security" not in headers  # nginx said http: it set the header, not the client


def test_an_oversized_request_is_refused_in_words_before_its_body_is_read():
    with real_server(PRIVASCAN_MAX_REQUEST_MB="1") as port, socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /photos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 200000000\r\n\r\n")  # 200 MB announced, none sent
        reply = b""
        while chunk := sock.recv(65536):  # the server answers and closes: recv then returns b""
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert b"larger than the 1 MB allowed" in body  # the app's own words (webapp/errors.py)


def test_after_a_rejection_of_an_unread_body_the_kept_alive_connection_still_answers():
    """A 403 (no CSRF token) to an 830 KB upload, then a page on the same connection: the server read
    the whole body before the app refused it, so the next request is not mistaken for body bytes."""
    from tests.helpers import multipart

    fields = multipart([("photos", (b"\xff" * 830_000, "big.jpg"))])
    with real_server() as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/photos", body=fields["data"], headers={"Content-Type": fields["content_type"]})
        refused = connection.getresponse()
        refused.read()
        assert refused.status == 403
        connection.request("GET", "/healthz")
        again = connection.getresponse()
        assert again.status == 200 and b"alive" in again.read()
        connection.close()


def test_a_connection_that_never_finishes_its_headers_is_closed():
    with real_server(PRIVASCAN_HEADER_TIMEOUT="1") as port, socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert sock.recv(1024) == b""  # closed by the server, no answer; the socket timeout (30 s) would raise


def test_the_access_log_when_turned_on_has_one_line_per_request_in_gunicorns_format():
    tails: list = []
    with real_server("--access-logfile", "-", "--access-logformat", "ACCESS %(s)s %(m)s %(U)s %(M)s", output=tails) as port:
        assert answer(port, "GET", "/nope")[0] == 404
        assert answer(port, "GET", "/healthz")[0] == 200
        deadline = time.monotonic() + 10
        while "ACCESS 404 GET /nope" not in tails[0].text() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert re.search(r"^ACCESS 404 GET /nope \d+$", tails[0].text(), re.MULTILINE), tails[0].text()[-2000:]
    assert re.search(r"^ACCESS 200 GET /healthz \d+$", tails[0].text(), re.MULTILINE)


def test_a_body_in_memory_reaches_the_app_whole():
    """An 8 MB upload over the real server (far above Werkzeug's 500 KB spool size) arrives whole."""
    from tests.helpers import photo_bytes

    sys.path.insert(0, str(SCRIPTS))
    try:
        from liveserver import Client, eight_megabyte_jpeg
    finally:
        sys.path.remove(str(SCRIPTS))
    big = eight_megabyte_jpeg()
    with real_server() as port:
        person = Client(port)
        assert person.open_page().status == 200
        reply = person.upload((big, "big.jpg"), (photo_bytes(1), "small.jpg"))
        assert reply.status == 200, reply.text[:500]
        assert len(re.findall(r'<article id="photo-', reply.text)) == 2
        person.close()
