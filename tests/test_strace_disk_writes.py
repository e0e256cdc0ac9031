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

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "strace_disk_writes.py"


def strace_problem() -> str | None:
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed (`make tools` or `apt-get install -y strace`)"
    probe = subprocess.run([strace, "-f", "-o", "/dev/null", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"strace cannot trace in this environment: {probe.stderr.strip()[:200]}"
    return None


@pytest.mark.timeout(240)
def test_real_server_writes_nothing_to_disk():
    problem = strace_problem()
    if problem:
        pytest.skip(problem)
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=230)
    report = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == "disk_writes=0", report
    assert done.returncode == 0, report
    assert "deleted one photo, cleared the session" in report  # the whole workflow ran
    # No version banner, and no server name either: gunicorn's header is dropped.
    assert "Server header(s) seen: (none)" in report, report
