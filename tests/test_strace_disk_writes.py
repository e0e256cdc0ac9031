"""Rule 1, proven from outside: the real gunicorn server, under strace, writes nothing to disk.

The in-process audit hook (test_no_disk_writes.py) sees Python's own file
calls; strace sees every process's system calls, C libraries and gunicorn's
master included. The script runs the whole workflow over HTTP and prints its
findings; this test only checks its verdict, so a failure shows the script's
full report.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "strace_disk_writes.py"


def strace_problem() -> str | None:
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed (`make tools` or `apt-get install -y strace`)"
    probe = subprocess.run([strace, "-f", "-o", "/dev/null", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"strace cannot trace in this environment: {probe.stderr.strip()[:200]}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_real_server_writes_nothing_to_disk():
    problem = strace_problem()
    if problem:
        pytest.skip(problem)
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, check=False, timeout=230)
    report = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == "disk_writes=0", report
    assert done.returncode == 0, report
    assert "deleted one photo, cleared the session" in report  # the whole workflow ran
    # No version banner, and no server name either: gunicorn's header is dropped.
    assert "Server header(s) seen: (none)" in report, report


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_through_nginx_neither_nginx_nor_the_server_writes_to_disk():
    """nginx (deploy/nginx/privascan-proxy.conf) in front, both under strace: no body or response is spooled."""
    problem = strace_problem()
    if problem:
        pytest.skip(problem)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from nginx_front import nginx_problem
    finally:
        sys.path.remove(str(SCRIPT.parent))
    if nginx_problem():
        pytest.skip(nginx_problem())
    done = subprocess.run([sys.executable, str(SCRIPT), "--through-nginx"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=290)
    report = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == "disk_writes=0", report
    assert done.returncode == 0, report
    assert "Workflow (through nginx):" in report and "deleted one photo, cleared the session" in report
    assert "Server header(s) seen: nginx" in report  # every answer came through nginx
    nginx_line = next(line for line in lines if line.startswith("nginx's own trace:"))
    assert nginx_line.endswith("spooled bodies or responses): 0"), nginx_line
    assert int(nginx_line.split(":")[1].split()[0]) > 0  # nginx really was traced (its pid file, its folders)


def test_the_trace_reader_is_not_blind():
    """The parser finds write-mode calls in strace's own format, including calls split across threads."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import strace_disk_writes as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    log = [
        '10 openat(AT_FDCWD</srv>, "notes.txt", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</srv/notes.txt>\n',
        '10 openat(AT_FDCWD</srv>, "/etc/hosts", O_RDONLY|O_CLOEXEC) = 3</etc/hosts>\n',
        '11 openat(5</tmp>, "spool" <unfinished ...>\n',
        '12 mkdir("/root/.cache/x", 0777) = -1 EEXIST (File exists)\n',
        "11 <... openat resumed>, O_RDWR|O_CREAT|O_EXCL, 0600) = 7</tmp/spool>\n",
        '12 rename("/data/a.tmp", "/data/a") = 0\n',
        '12 unlinkat(AT_FDCWD</srv>, "/dev/shm/wgunicorn-x", 0) = 0\n',
        "12 +++ exited with 0 +++\n",
    ]
    calls = script.parse_trace(log)
    written = [(c.syscall, c.paths) for c in calls if c.succeeded and not all(map(script.in_memory, c.paths))]
    assert written == [("openat", ["/srv/notes.txt"]), ("openat", ["/tmp/spool"]), ("rename", ["/data/a.tmp", "/data/a"])]
    assert [c.paths for c in calls if not c.succeeded] == [["/root/.cache/x"]]
    assert [c.paths for c in calls if all(map(script.in_memory, c.paths))] == [["/dev/shm/wgunicorn-x"]]
