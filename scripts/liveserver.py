"""The real server on a loopback port, and a client that talks to it like the page does.

Shared by ``strace_disk_writes.py`` and ``load_test.py``. The server is the
production one: ``gunicorn --config webapp/gunicorn_conf.py wsgi:app``, in
demo mode (a tiny random MedSigLIP), with only the bind address overridden.
The client uses the standard library's ``http.client`` (one keep-alive
connection and one session cookie per simulated person) and Werkzeug's
multipart encoder, so nothing here needs a package the app does not.
Photos are made in memory; nothing in this module writes a file.
"""

from __future__ import annotations

import collections
import http.client
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COOKIE = "privascan_session"
CARD_ID = re.compile(r'<article id="photo-([^"]+)"')
CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')
POLLING = 'hx-trigger="every 1s"'


# -- the server ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(**extra: str) -> dict[str, str]:
    """The environment the server runs with: demo model, no bytecode caches, plain-HTTP cookies."""
    env = dict(os.environ)
    env.update(
        PRIVASCAN_DEMO_MODEL="1",  # tiny random weights: results meaningless, code paths real
        PYTHONDONTWRITEBYTECODE="1",  # as in the Makefile's run target
        HF_HUB_OFFLINE="1",  # the demo model is local; never ask the hub
        # Loopback is plain HTTP, and a client does not return a Secure cookie over it.
        PRIVASCAN_SECURE_COOKIE="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def gunicorn_command(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", "webapp/gunicorn_conf.py",
            "--bind", f"127.0.0.1:{port}", *extra, "wsgi:app"]


def prepare_first_run_caches(env: dict[str, str]) -> list[str]:
    """Build what the very first start of a fresh install would write once, and say what it was.

    The demo model (random weights in ~/.cache/privascan), matplotlib's font
    list (written on matplotlib's first import ever; `privascan eval` and
    ultralytics import it, the server itself no longer does) and the bank embeddings (``privascan prepare``,
    the deploy-time step) are caches of code, fonts and model output, never
    user data. Creating them here, in a separate untraced process, leaves the
    traced server in the state every later start of an installed server is in.
    """
    code = (
        "from plugins.medsiglip.demo import demo_model_directory; print('demo model:', demo_model_directory());"
        "import matplotlib, matplotlib.font_manager; print('matplotlib font cache:', matplotlib.get_cachedir())"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"could not prepare the demo model:\n{done.stderr[-2000:]}")
    prepared = subprocess.run([sys.executable, "-m", "webapp.cli", "prepare"], cwd=REPO, env=env,
                              capture_output=True, text=True, check=False, timeout=600)
    if prepared.returncode != 0:
        raise RuntimeError(f"could not prepare the bank embeddings:\n{prepared.stderr[-2000:]}")
    return [line for line in done.stdout.splitlines() if ":" in line] + [
        f"bank embeddings (privascan prepare): {line}" for line in prepared.stdout.splitlines() if line.strip()
    ]


class OutputTail:
    """Keeps the last lines a process prints, in memory (a pipe that is never read would block it)."""

    def __init__(self, stream, keep: int = 200, divert=None):
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._divert = divert  # called with each line; a true answer keeps it out of the tail
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").rstrip()
            if self._divert is None or not self._divert(text):
                self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    except OSError:
        pass
    return found


def descendant_named(root: int, needle: str, timeout: float = 60.0) -> int:
    """The shallowest live process below ``root`` running ``needle`` (strace's own short-lived
    probe children, which still carry strace's command line, are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        level = children(root)
        while level:
            for pid in level:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        argv = handle.read().split(b"\0")
                except OSError:
                    continue
                if os.path.basename(argv[0]) != b"strace" and any(needle.encode() in arg for arg in argv):
                    return pid
            level = [child for pid in level for child in children(pid)]
        time.sleep(0.2)
    raise RuntimeError(f"no process running {needle!r} appeared under {root}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- a person's browser ---------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Client:
    """One person: one keep-alive connection, one session cookie, the page's CSRF token."""

    port: int
    timeout: float = 60.0
    cookie: str | None = None
    # Other cookies the server sets (scale-out mode's session key cookie, privascan_key).
    other_cookies: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    server_headers: set[str] = field(default_factory=set)
    _connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                htmx: bool = True) -> Reply:
        sent = dict(headers or {})
        if htmx:
            sent.setdefault("HX-Request", "true")
        cookies = {**self.other_cookies, **({COOKIE: self.cookie} if self.cookie else {})}
        if cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        if self.token and method != "GET":
            sent["X-CSRF-Token"] = self.token
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            started = time.perf_counter()
            try:
                self._connection.request(method, path, body=body, headers=sent)
                response = self._connection.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed a kept-alive connection between requests: reconnect once.
                self.close()
                if attempt == 2:
                    raise
                continue
            seconds = time.perf_counter() - started
            reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, seconds)
            if response.will_close:
                self.close()
            break
        self.server_headers.add(reply.headers.get("server", "(none)"))
        for value in response.msg.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            value = rest.split(";", 1)[0]
            if name.strip() == COOKIE:
                self.cookie = value
            elif value:
                self.other_cookies[name.strip()] = value
            else:  # deleted by the server
                self.other_cookies.pop(name.strip(), None)
        return reply

    def get(self, path: str, htmx: bool = True) -> Reply:
        return self.request("GET", path, htmx=htmx)

    def post(self, path: str, fields: list[tuple[str, object]] | None = None, htmx: bool = True) -> Reply:
        if fields is None:
            return self.request("POST", path, body=b"", headers={"Content-Type": "application/x-www-form-urlencoded"},
                                htmx=htmx)
        body, content_type = multipart(fields)
        return self.request("POST", path, body=body, headers={"Content-Type": content_type}, htmx=htmx)

    def open_page(self) -> Reply:
        page = self.get("/", htmx=False)
        found = CSRF.search(page.text)
        if found:
            self.token = found.group(1)
        return page

    def upload(self, *photos: tuple[bytes, str]) -> Reply:
        return self.post("/photos", [("photos", photo) for photo in photos] + [("last_modified", "")])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class AlternatingClient(Client):
    """One person behind a load balancer without sticky sessions: each request goes to the next replica.

    Scale-out mode (docs/scaling.md): a keep-alive connection per replica,
    one set of cookies for all of them.
    """

    ports: tuple[int, ...] = ()
    _turn: int = 0
    _connections: dict = field(default_factory=dict)

    def request(self, *args, **kwargs) -> Reply:
        self._connections[self.port] = self._connection
        self.port = self.ports[self._turn % len(self.ports)]
        self._turn += 1
        self._connection = self._connections.get(self.port)
        return super().request(*args, **kwargs)

    def close(self) -> None:
        super().close()
        for connection in self._connections.values():
            if connection is not None:
                connection.close()
        self._connections.clear()


def multipart(fields: list[tuple[str, object]]) -> tuple[bytes, str]:
    """A multipart body in memory; a value ``(bytes, filename)`` is a file part."""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    values = MultiDict(
        (key, FileStorage(io.BytesIO(value[0]), filename=value[1]) if isinstance(value, tuple) else value)
        for key, value in fields
    )
    boundary, body = encode_multipart(values)
    return body, f"multipart/form-data; boundary={boundary}"


def wait_until_ready(port: int, timeout: float, alive=lambda: True) -> float:
    """Poll the status line until the model is ready; returns the seconds it took."""
    started = time.monotonic()
    client = Client(port, timeout=10)
    while time.monotonic() - started < timeout:
        if not alive():
            raise RuntimeError("the server exited during start-up")
        try:
            status = client.get("/status").text
        except OSError:
            client.close()
            time.sleep(0.3)
            continue
        if "Model ready" in status:
            client.close()
            return time.monotonic() - started
        if "Model unavailable" in status:
            raise RuntimeError("the model could not be loaded: " + " ".join(re.sub(r"<[^>]+>", " ", status).split()))
        time.sleep(0.3)
    raise RuntimeError(f"the model was not ready after {timeout:.0f} s")


def wait_for_cards(client: Client, photo_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll each card (as the page does) until it stops polling; returns the final card HTML."""
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    while len(final) < len(photo_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(photo_ids) - len(final)} photo(s) were still being analysed after {timeout:.0f} s")
        for photo_id in photo_ids:
            if photo_id in final:
                continue
            card = client.get(f"/photos/{photo_id}/card")
            if card.status != 200:
                raise RuntimeError(f"card {photo_id}: HTTP {card.status}")
            if POLLING not in card.text:
                final[photo_id] = card.text
        time.sleep(0.3)
    return final


# -- photos, made in memory ------------------------------------------------------------
def lesion_photo(seed: int, width: int = 1024, height: int = 768) -> Image.Image:
    """Skin-coloured noise with a dark, irregular blob: enough for the localizer to find something."""
    rng = np.random.default_rng(seed)
    skin = np.array([214, 166, 132], dtype=np.float32) * (1 + 0.05 * rng.standard_normal((height, width, 1)))
    image = Image.fromarray(np.clip(skin, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy = rng.integers(width // 3, 2 * width // 3), rng.integers(height // 3, 2 * height // 3)
    radius = int(rng.integers(min(width, height) // 12, min(width, height) // 6))
    draw.ellipse((cx - radius, cy - int(radius * 0.8), cx + radius, cy + int(radius * 0.8)), fill=(90, 55, 40))
    return image.filter(ImageFilter.GaussianBlur(2))


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def eight_megabyte_jpeg() -> bytes:
    """Noise compresses badly: a 2600x1900 JPEG at quality 100 is about 8 MB (well over Werkzeug's 500 KB spool limit)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(1900, 2600, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=100)


def heic(image: Image.Image) -> bytes:
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(image).save(buffer, quality=80)
    return buffer.getvalue()
