"""The production server's worker: reads whole requests on an event loop, runs Flask on threads.

gunicorn's gthread worker gives each new connection a pool thread that
blocks reading its headers, so a handful of clients that send one byte and
then nothing (or a header line every few seconds) hold every thread and
stop the server. This worker keeps gunicorn (one master, one worker
process: one model copy, sessions in this process's memory) but reads
requests with Tornado's HTTP/1.1 server on one event loop:

- a connection costs a socket and a few hundred bytes until its request is
  complete; no thread is tied to it while it is idle or slow;
- the headers must all arrive within ``HEADER_TIMEOUT`` seconds of the
  connection (or of the previous response, for a kept-alive one) and the
  body within ``BODY_TIMEOUT``; then the connection is closed;
- the body is gathered in memory (a ``BytesIO``, never a temp file: Tornado
  has no spooling) up to the app's ``MAX_CONTENT_LENGTH``; a request that
  declares more gets the app's own "413" page at once and the connection is
  closed without its body being read;
- only a complete request reaches one of ``threads`` pool threads, where
  the WSGI app runs; Tornado never parses the body itself.

``X-Forwarded-*`` headers are not interpreted here (``xheaders`` off): the
app trusts them through Werkzeug's ProxyFix only when
``PRIVASCAN_BEHIND_PROXY=1`` (``webapp/security.py``). No ``Server`` header
is sent. gunicorn's access log is off in ``webapp/gunicorn_conf.py``; when an
operator turns it on (``--access-logfile``), lines are written through
gunicorn's own logger and format, timed from the complete request to the
response sent (``scripts/load_test.py`` reads them).
"""

from __future__ import annotations

import datetime
import io
import logging
import sys
import time
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

from gunicorn.sock import ssl_context
from gunicorn.workers.gtornado import TornadoWorker
from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.wsgi import WSGIContainer

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # request line and headers together; more is answered 400 and closed
_NO_BODY = (204, 304)


class WholeRequestServer(httputil.HTTPServerConnectionDelegate):
    """Tornado's request delegate: one ``_Request`` per request, the WSGI app run on ``executor``."""

    def __init__(self, wsgi_app, executor: ThreadPoolExecutor, max_body_bytes: int, access_log=None):
        self.wsgi_app = wsgi_app
        self.executor = executor
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log  # gunicorn's logger, when its access log is on
        self._environ = WSGIContainer(wsgi_app, executor).environ  # Tornado's request -> WSGI environ (multithread)

    def start_request(self, server_conn, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Request(self, request_conn)

    async def respond(self, request: httputil.HTTPServerRequest, body: io.BytesIO, length: int) -> None:
        """Run the app on a pool thread and write its whole response."""
        began = time.monotonic()
        environ = self._environ(request)
        environ["RAW_URI"] = request.uri
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = str(length)
        started: dict = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers
            return chunks.append

        def run_app() -> None:
            result = self.wsgi_app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

        chunks: list[bytes] = []
        loop = IOLoop.current()
        try:
            await loop.run_in_executor(self.executor, run_app)
            if not started:
                raise RuntimeError("the WSGI application did not call start_response")
        except Exception:  # noqa: BLE001 - Flask answers its own errors; this is a bug below it
            log.exception("the WSGI application failed")
            started, chunks = {"status": "500 Internal Server Error", "headers": [("Content-Type", "text/plain")]}, [
                b"Internal Server Error"]
        payload = b"".join(chunks)
        code_text, reason = started["status"].split(" ", 1)
        code = int(code_text)
        headers = httputil.HTTPHeaders()
        for name, value in started["headers"]:
            if name.lower() != "server":
                headers.add(name, value)
        if code not in _NO_BODY and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(payload))
        try:
            request.connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", code, reason), headers, chunk=payload)
            request.connection.finish()
        except iostream.StreamClosedError:
            pass  # the client went away; nothing to tell it
        if self.access_log is not None and self.access_log.access_log_enabled:
            response = SimpleNamespace(status=code, sent=len(payload), headers=list(headers.get_all()))
            took = datetime.timedelta(seconds=time.monotonic() - began)
            self.access_log.access(response, list(request.headers.get_all()), environ, took)


class _Request(httputil.HTTPMessageDelegate):
    def __init__(self, server: WholeRequestServer, connection: httputil.HTTPConnection):
        self.server = server
        self.connection = connection
        self.request: httputil.HTTPServerRequest | None = None
        self.body = io.BytesIO()
        self.length = 0

    def headers_received(self, start_line, headers):
        self.request = httputil.HTTPServerRequest(connection=self.connection, start_line=start_line, headers=headers)
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.server.max_body_bytes:
            return self._refuse_unread(int(declared))
        return None

    async def _refuse_unread(self, declared: int) -> None:
        """Too large: the app answers (413 in words) before the body is read, then the connection closes."""
        stream = self.connection.detach()  # Tornado would otherwise go on to read (or refuse) the body
        self.request.connection = _DetachedConnection(stream)
        await self.server.respond(self.request, io.BytesIO(), declared)
        try:
            await stream.write(b"")  # resolves once everything before it is sent
        except iostream.StreamClosedError:
            pass
        stream.close()

    def data_received(self, chunk: bytes):
        self.body.write(chunk)
        self.length += len(chunk)

    def finish(self) -> None:
        self.body.seek(0)
        IOLoop.current().spawn_callback(self.server.respond, self.request, self.body, self.length)

    def on_connection_close(self) -> None:
        self.body = io.BytesIO()  # drop what a vanished client had sent


class _DetachedConnection:
    """Writes one response straight to a stream taken over from Tornado's HTTP/1 connection."""

    def __init__(self, stream: iostream.IOStream):
        self.stream = stream

    def write_headers(self, start_line, headers, chunk=b""):
        headers["Connection"] = "close"
        lines = [f"{start_line.version} {start_line.code} {start_line.reason}"]
        lines += [f"{name}: {value}" for name, value in headers.get_all()]
        self.stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + chunk)

    def finish(self):
        pass


class BufferingWorker(TornadoWorker):
    """gunicorn worker: ``worker_class = "webapp.server.BufferingWorker"`` (see gunicorn_conf.py)."""

    def run(self):
        from .config import config_from_environment

        settings = config_from_environment()
        app_config = getattr(self.wsgi, "config", {})  # the Flask app's own cap, when it is one
        max_body = int(app_config.get("MAX_CONTENT_LENGTH") or settings["MAX_CONTENT_LENGTH"])

        self.ioloop = IOLoop.current()
        self.alive = True
        self.server_alive = False
        # gunicorn's heartbeat (the master kills a worker that stops notifying) and shutdown polling.
        self.callbacks = [PeriodicCallback(self.watchdog, 1000), PeriodicCallback(self.heartbeat, 1000)]
        for callback in self.callbacks:
            callback.start()

        executor = ThreadPoolExecutor(max_workers=max(1, self.cfg.threads), thread_name_prefix="privascan-web")
        server = HTTPServer(
            WholeRequestServer(self.wsgi, executor, max_body, access_log=self.log),
            no_keep_alive=self.cfg.keepalive <= 0,
            xheaders=False,
            ssl_options=ssl_context(self.cfg) if self.cfg.is_ssl else None,
            max_header_size=MAX_HEADER_BYTES,
            idle_connection_timeout=settings["HEADER_TIMEOUT"],
            body_timeout=settings["BODY_TIMEOUT"],
            # Tornado refuses (400, closed) a chunked body past this; a declared
            # Content-Length past the cap never gets this far (_refuse_unread).
            max_body_size=max_body,
            max_buffer_size=max_body + MAX_HEADER_BYTES,
        )
        self.server = server
        self.server_alive = True
        for listener in self.sockets:
            listener.setblocking(False)
            server.add_socket(listener)
        self.log.info("Reading requests on an event loop; %d app threads; headers within %.0f s, bodies within %.0f s",
                      self.cfg.threads, settings["HEADER_TIMEOUT"], settings["BODY_TIMEOUT"])
        try:
            self.ioloop.start()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            sys.stdout.flush()
