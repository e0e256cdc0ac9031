#!/usr/bin/env python3
"""Prove that the real server writes nothing to disk: gunicorn under strace, a whole workflow over HTTP.

    .venv/bin/python scripts/strace_disk_writes.py

Starts ``gunicorn --config webapp/gunicorn_conf.py wsgi:app`` (demo mode: a
tiny random MedSigLIP) on a free loopback port under
``strace -f -e trace=openat,creat,rename,...,mkdir`` and, as a person would,
loads the page, uploads five photos (one of 8 MB, one HEIC) in one go,
analyses them all, polls the cards until done, asks for a second heatmap,
fetches every picture, calls the JSON API, runs a live scan (frames, a
heatmap, the alert log downloads) when the live routes exist, deletes a photo
and clears the session. Then it reads the trace and prints every file call in
a write mode (open with O_WRONLY/O_RDWR/O_CREAT/O_TRUNC/O_APPEND, creat,
rename, unlink, mkdir) that succeeded on a path outside /dev, /proc and /sys,
and ends with the line ``disk_writes=N``. Exit status: 0 when N is 0, 1 when
not, 2 when the proof could not be run (no strace, the workflow failed).

What is traced, and why from the very start: the server runs under strace
from its first system call, so start-up (imports, model loading) is covered
too, not only the requests. Two caches that a fresh install writes exactly
once, on its first start, are made beforehand in a separate, untraced process:
the demo model (random weights in ~/.cache/privascan) and matplotlib's font
list (made on matplotlib's first import ever; `privascan eval` and
ultralytics import it, the server itself no longer does). Neither holds user data; every
later start of an installed server finds them, as the traced one does.

With ``--through-nginx`` Debian's nginx runs in front with the deploy
recipe's proxy settings (``deploy/nginx/privascan-proxy.conf``, via
``scripts/nginx_front.py``), under its own strace from its first system call
too, and the workflow goes through it: the 8 MB uploads and the pictures
pass nginx's buffers, which must stay in memory (no client_body_temp_path
or proxy_temp_path file). Both traces are counted.

The strace log lives in /dev/shm (memory) and is deleted at the end, unless
--keep-log is given. /dev/shm is also where gunicorn's heartbeat file and
torch's (unused) compile-cache folder go; those are listed for information.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from liveserver import (
    CARD_ID,
    REPO,
    Client,
    OutputTail,
    children,
    descendant_named,
    eight_megabyte_jpeg,
    encode,
    free_port,
    gunicorn_command,
    heic,
    lesion_photo,
    prepare_first_run_caches,
    server_environment,
    wait_for_cards,
    wait_until_ready,
)

# "?name": trace it where the architecture has it (aarch64 has no open/creat/rename/...).
SYSCALLS = ("openat", "?open", "?creat", "?rename", "renameat", "?renameat2", "?unlink", "unlinkat",
            "?mkdir", "mkdirat", "?link", "linkat", "?symlink", "symlinkat", "?truncate")
WRITE_FLAGS = re.compile(r"\bO_(WRONLY|RDWR|CREAT|TRUNC|APPEND)\b")
MEMORY_PREFIXES = ("/dev/", "/proc/", "/sys/")


# -- reading the trace -----------------------------------------------------------------
@dataclass
class FileCall:
    pid: str
    syscall: str
    paths: list[str]
    detail: str  # flags or mode, as strace printed them
    result: str

    @property
    def succeeded(self) -> bool:
        return not self.result.startswith("-1")

    def __str__(self) -> str:
        arrow = " -> ".join(self.paths)
        return f"{self.syscall}({arrow}{', ' + self.detail if self.detail else ''}) = {self.result} [pid {self.pid}]"


LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<rest>.*)$")
CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<result>.*)$")
RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
STRING = r'"(?:[^"\\]|\\.)*"'
DIRFD = r"(?:AT_FDCWD|\d+)(?:<(?P<{}>[^>]*)>)?"
ARG_PATTERNS = {
    # name: (regex over the arguments, groups holding (dir, path) pairs, detail group)
    "openat": re.compile(rf"^{DIRFD.format('d1')}, (?P<p1>{STRING}), (?P<detail>[^,)]+)"),
    "open": re.compile(rf"^(?P<p1>{STRING}), (?P<detail>[^,)]+)"),
    "creat": re.compile(rf"^(?P<p1>{STRING}), (?P<detail>\S+)"),
    "rename": re.compile(rf"^(?P<p1>{STRING}), (?P<p2>{STRING})"),
    "renameat": re.compile(rf"^{DIRFD.format('d1')}, (?P<p1>{STRING}), {DIRFD.format('d2')}, (?P<p2>{STRING})"),
    "unlink": re.compile(rf"^(?P<p1>{STRING})"),
    "unlinkat": re.compile(rf"^{DIRFD.format('d1')}, (?P<p1>{STRING}), (?P<detail>\S+)"),
    "mkdir": re.compile(rf"^(?P<p1>{STRING}), (?P<detail>\S+)"),
    "mkdirat": re.compile(rf"^{DIRFD.format('d1')}, (?P<p1>{STRING}), (?P<detail>\S+)"),
    "link": re.compile(rf"^(?P<p1>{STRING}), (?P<p2>{STRING})"),
    "linkat": re.compile(rf"^{DIRFD.format('d1')}, (?P<p1>{STRING}), {DIRFD.format('d2')}, (?P<p2>{STRING})"),
    "symlink": re.compile(rf"^(?P<p1>{STRING}), (?P<p2>{STRING})"),
    "symlinkat": re.compile(rf"^(?P<p1>{STRING}), {DIRFD.format('d2')}, (?P<p2>{STRING})"),
    "truncate": re.compile(rf"^(?P<p1>{STRING})"),
}
ARG_PATTERNS["renameat2"] = ARG_PATTERNS["renameat"]


def _unquote(text: str) -> str:
    return text[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape", "replace")


def parse_trace(lines) -> list[FileCall]:
    """Every write-mode file call in an ``strace -f -y`` log (unfinished calls joined with their resumption)."""
    pending: dict[str, str] = {}
    calls: list[FileCall] = []
    for raw in lines:
        line = LINE.match(raw.rstrip("\n"))
        if not line:
            continue
        pid, rest = line.group("pid"), line.group("rest")
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = RESUMED.match(rest)
        if resumed:
            rest = pending.pop(pid, resumed.group("name") + "(") + resumed.group("tail")
        call = CALL.match(rest)
        if not call or call.group("name") not in ARG_PATTERNS:
            continue
        name, args, result = call.group("name"), call.group("args"), call.group("result").strip()
        found = ARG_PATTERNS[name].match(args)
        if not found:
            calls.append(FileCall(pid, name, [args], "unparsed", result))
            continue
        groups = found.groupdict()
        detail = (groups.get("detail") or "").strip()
        if name in ("open", "openat") and not WRITE_FLAGS.search(detail):
            continue  # a read-only open
        paths = []
        for index in ("1", "2"):
            if groups.get("p" + index) is None:
                continue
            path = _unquote(groups["p" + index])
            base = groups.get("d" + index)
            if not path.startswith("/") and base:
                path = os.path.join(base, path)
            paths.append(path)
        calls.append(FileCall(pid, name, paths, detail, result))
    return calls


def in_memory(path: str) -> bool:
    return path.startswith(MEMORY_PREFIXES) or path in ("/dev", "/proc", "/sys")


# -- the workflow ----------------------------------------------------------------------
def run_workflow(port: int, say) -> list[str]:
    """A person's whole visit; raises RuntimeError if any step does not work. Returns the Server headers seen."""
    person = Client(port, timeout=120)

    def expect(reply, what: str, status: int = 200):
        if reply.status != status:
            words = " ".join(re.sub(r"<[^>]+>", " ", reply.text).split())[:300]
            raise RuntimeError(f"{what}: HTTP {reply.status} (expected {status}): {words}")
        return reply

    expect(person.open_page(), "the page")
    if not person.token:
        raise RuntimeError("the page carried no CSRF token")
    big = eight_megabyte_jpeg()
    photos = [
        (big, "eight-megabytes.jpg"),
        (heic(lesion_photo(1)), "phone.heic"),
        (encode(lesion_photo(2), "PNG"), "scan.png"),
        (encode(lesion_photo(3), "WEBP"), "chat.webp"),
        (encode(lesion_photo(4, 1800, 1010), "JPEG", quality=92), "arm.jpg"),
    ]
    upload = expect(person.upload(*photos), "uploading 5 photos")
    ids = CARD_ID.findall(upload.text)
    if len(ids) != 5:
        raise RuntimeError(f"uploading 5 photos: {len(ids)} cards came back")
    say(f"  uploaded 5 photos ({len(big) / 1e6:.1f} MB JPEG, HEIC, PNG, WebP, JPEG) in one request")
    expect(person.post("/analyze-all"), "analyze all")
    started = time.monotonic()
    cards = wait_for_cards(person, ids, timeout=300)
    if not all("Analysed" in card or "Can&#39;t assess" in card or "Can't assess" in card for card in cards.values()):
        raise RuntimeError("not every photo was analysed")
    say(f"  analysed all 5 (polled the cards until done: {time.monotonic() - started:.1f} s)")
    first = ids[0]
    # The 8 MB photo is random noise: the quality gate refuses it, so the
    # person presses "Analyse anyway" (the low-quality path is traced too).
    if "Analyse anyway" in cards[first]:
        expect(person.post(f"/photos/{first}/analyze", [("analyse_anyway", "1")]), "analyse anyway")
        cards[first] = wait_for_cards(person, [first], timeout=300)[first]
        if "low quality" not in cards[first]:
            raise RuntimeError("analyse anyway did not give a low-quality result")
    runner_up = re.search(rf'/photos/{re.escape(first)}/explain/([\w-]+)"', cards[first])
    if runner_up is None:
        raise RuntimeError("the first card offers no second heatmap")
    condition = runner_up.group(1)
    expect(person.post(f"/photos/{first}/explain/{condition}"), "a second heatmap")
    deadline = time.monotonic() + 120
    while person.get(f"/photos/{first}/heatmap/{condition}.png").status != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the second heatmap never arrived")
        time.sleep(0.3)
    for picture in ("photo.jpg", "thumbnail.jpg", "crop.jpg", "heatmap.png", "located.jpg"):
        expect(person.get(f"/photos/{first}/{picture}"), picture)
    say(f"  second heatmap ({condition}) and 6 pictures fetched")
    api = Client(port, timeout=120)
    reply = expect(api.post("/api/analyze?explain=1&analyse_anyway=1", [("image", (big, "api.jpg"))], htmx=False),
                   "the JSON API")
    if b'"heatmap"' not in reply.body:
        raise RuntimeError("the JSON API answered without the heatmap asked for")
    api.close()
    say("  JSON API: the 8 MB photo analysed with a heatmap")
    api = Client(port, timeout=120)
    reply = expect(api.post("/api/analyze?fhir=1&crop=1&analyse_anyway=1", [("image", (big, "api.jpg"))], htmx=False), "the JSON API as FHIR")
    if b'"DiagnosticReport"' not in reply.body:
        raise RuntimeError("the JSON API with fhir=1 answered without a DiagnosticReport")
    api.close()
    # Lesions, comparison, reports and exports (issue 15): all made in memory on request.
    # The lesion starts from the first photo, which has a result (analysed anyway), so it can be exported.
    expect(person.post(f"/photos/{first}/lesion", [("lesion", "new"), ("name", "Arm mole"), ("site", "forearm")]), "grouping a lesion")
    lesion = re.search(r'href="/lesions/([\w-]+)"', person.get("/", htmx=False).text)
    if lesion is None:
        raise RuntimeError("the grouped lesion is not linked from the page")
    expect(person.post(f"/photos/{ids[2]}/lesion", [("lesion", lesion.group(1))]), "adding a photo to the lesion")
    for path in (f"/lesions/{lesion.group(1)}", f"/report/lesions/{lesion.group(1)}", f"/report/photos/{first}", "/report/session",
                 f"/export/photos/{first}.fhir.json", "/export/session.fhir.json?crop=1", "/export/session.csv",
                 "/export/session.json", f"/export/lesions/{lesion.group(1)}.fhir.json"):
        expect(person.get(path, htmx=False), path)
    say("  lesion grouped and compared; photo, lesion and session reports; FHIR, CSV and JSON exports; API fhir=1")
    if person.get("/live").status == 200:
        expect(person.post("/live/start"), "starting a live scan")
        frame = encode(lesion_photo(5, 640, 480), "JPEG", quality=80)
        for _ in range(3):
            expect(person.post("/live/frame", [("frame", (frame, "frame.jpg"))]), "a live frame")
        explained = person.post("/live/explain")
        if explained.status not in (200, 409):  # 409: the last frame had no lesion in view
            expect(explained, "a live heatmap")
        for log in ("/live/log.csv", "/live/log.json"):
            expect(person.get(log, htmx=False), log)
        say(f"  live scan: 3 frames, a heatmap (HTTP {explained.status}), the alert log as CSV and JSON")
    else:
        say("  live scan: no /live route in this build, skipped")
    expect(person.post(f"/photos/{ids[1]}/delete"), "deleting a photo")
    expect(person.post("/session/clear"), "clearing the session")
    if CARD_ID.findall(person.get("/", htmx=False).text):
        raise RuntimeError("photos were still listed after clearing the session")
    say("  deleted one photo, cleared the session (the page is empty again)")
    person.close()
    return sorted(person.server_headers | api.server_headers)


# -- running it ------------------------------------------------------------------------
def strace_supports_seccomp(strace: str) -> bool:
    probe = subprocess.run([strace, "-f", "--seccomp-bpf", "-e", "trace=openat", "-o", "/dev/null", "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-log", action="store_true", help="keep the strace log in /dev/shm and print its path")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed for start-up (default 300)")
    parser.add_argument("--through-nginx", action="store_true",
                        help="put nginx (deploy/nginx/privascan-proxy.conf) in front, also under strace, and go through it")
    args = parser.parse_args(argv)

    def say(text: str = "") -> None:
        print(text, flush=True)

    strace = shutil.which("strace")
    if strace is None:
        say("strace is not installed, so this proof cannot run. Install it with `apt-get install -y strace`"
            " (`make tools` does it) and run this script again.")
        return 2
    if not os.path.isdir("/dev/shm"):
        say("/dev/shm is missing: the strace log must not go to disk, so this proof needs a Linux tmpfs at /dev/shm.")
        return 2

    env = server_environment()
    say("Prepared before tracing (first-start caches, no user data):")
    for line in prepare_first_run_caches(env):
        say(f"  {line}")

    if args.through_nginx:
        from nginx_front import nginx_front, nginx_problem

        problem = nginx_problem()
        if problem:
            say(f"{problem}, so the proof through nginx cannot run.")
            return 2
    port = free_port()
    nginx_runtime = None
    log_paths = []
    for _ in range(2 if args.through_nginx else 1):
        handle, log_path = tempfile.mkstemp(prefix="privascan-strace-", suffix=".log", dir="/dev/shm")
        os.close(handle)
        log_paths.append(log_path)
    log_path = log_paths[0]

    def traced(log: str) -> list[str]:
        command = [strace, "-f", "-qq", "-y", "-o", log, "-e", "trace=" + ",".join(SYSCALLS)]
        if strace_supports_seccomp(strace):
            command.insert(1, "--seccomp-bpf")  # only the traced calls stop the server: much faster
        return command

    command = [*traced(log_path), "--", *gunicorn_command(port)]
    say(f"Server: {' '.join(gunicorn_command(port)[1:])}")
    say(f"  under: {' '.join(command[: command.index('--')])}")
    tracer = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputTail(tracer.stdout)
    workflow_error = None
    server_headers: list[str] = []
    master = None
    try:
        seconds = wait_until_ready(port, args.timeout, alive=lambda: tracer.poll() is None)
        master = descendant_named(tracer.pid, "gunicorn", timeout=10)
        say(f"  model ready {seconds:.1f} s after start (traced from the first system call)")
        try:
            if args.through_nginx:
                with nginx_front(port, wrap=(*traced(log_paths[1]), "--")) as (front, nginx_runtime):
                    say(f"nginx on port {front} in front (deploy/nginx/privascan-proxy.conf), traced from its first system call")
                    say("Workflow (through nginx):")
                    server_headers = run_workflow(front, say)
            else:
                say("Workflow:")
                server_headers = run_workflow(port, say)
        except Exception as exc:  # noqa: BLE001 - reported, and the proof is then incomplete
            workflow_error = f"{type(exc).__name__}: {exc}"
        os.kill(master, signal.SIGTERM)  # gunicorn shuts down gracefully; strace exits with it
        tracer.wait(timeout=60)
    except Exception as exc:  # noqa: BLE001
        workflow_error = workflow_error or f"{type(exc).__name__}: {exc}"
    finally:
        if tracer.poll() is None:  # something went wrong: stop the server (every process of it), then strace
            for pid in _descendants(tracer.pid):
                _kill(pid, signal.SIGKILL)
            _kill(tracer.pid, signal.SIGKILL)
            tracer.wait(timeout=30)

    calls = []
    spooled: list[FileCall] = []
    for index, path in enumerate(log_paths):
        with open(path, encoding="utf-8", errors="replace") as trace:
            found = parse_trace(trace)
        calls += found
        if index == 1 and nginx_runtime is not None:
            # nginx's temp folders are in /dev/shm here, so a spooled body or response would pass as
            # "in memory"; on a real server they are on disk. Any file nginx made in them counts.
            folders = tuple(f"{nginx_runtime}/{name}/" for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))
            spooled = [c for c in found if any(p.startswith(folders) for p in c.paths)]  # tried is enough
            say(f"nginx's own trace: {len(found)} write-mode call(s) (its pid file and temp folders in /dev/shm), "
                f"files in its temp folders (spooled bodies or responses): {len(spooled)}")
        if args.keep_log:
            say(f"strace log kept at {path} (in memory; delete it when done)")
        else:
            os.unlink(path)

    writes = [c for c in calls if c.succeeded and not all(in_memory(p) for p in c.paths)] + spooled
    refused = [c for c in calls if not c.succeeded and not all(in_memory(p) for p in c.paths)]
    memory = [c for c in calls if c.succeeded and all(in_memory(p) for p in c.paths)]
    say(f"Server header(s) seen: {', '.join(server_headers) or '(no response)'}")
    say(f"In memory (/dev/shm and the like, not disk): {len(memory)} call(s)")
    for call in _summarise(memory):
        say(f"  {call}")
    if refused:
        say(f"Write-mode calls that failed, so wrote nothing ({len(refused)}; e.g. mkdir of a folder that exists):")
        for call in _summarise(refused):
            say(f"  {call}")
    say(f"Write-mode file calls outside /dev, /proc and /sys{', or in nginx temp folders' if args.through_nginx else ''}: {len(writes)}")
    for call in writes:
        say(f"  {call}")
    if workflow_error:
        say(f"The workflow did not complete, so this trace proves nothing: {workflow_error}")
        say("Server output (last lines):")
        say(output.text()[-4000:])
        say(f"disk_writes={len(writes)}")
        return 2
    say(f"disk_writes={len(writes)}")
    return 0 if not writes else 1


def _descendants(root: int) -> list[int]:
    found, level = [], children(root)
    while level:
        found.extend(level)
        level = [child for pid in level for child in children(pid)]
    return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _summarise(calls: list[FileCall], limit: int = 12) -> list[str]:
    """Identical calls (e.g. one per request) counted once."""
    counts: dict[str, int] = {}
    for call in calls:
        key = f"{call.syscall}({' -> '.join(call.paths)}) = {call.result.split(' ', 1)[0].split('<', 1)[0]}"
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{key}{f'  (x{count})' if count > 1 else ''}" for key, count in counts.items()]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


if __name__ == "__main__":
    sys.exit(main())
