"""Huge photos against the real server: decoded within bounds, refused when they cannot fit (issue 13).

Runs scripts/decode_memory.py (production gunicorn, demo model) with 4
concurrent uploads per case and checks what each upload was answered; the
memory figures it prints (idle and peak RSS per case) are shown, not
asserted (no timed or memory assertion in tests; `python scripts/decode_memory.py`
measures with 8).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "decode_memory.py"


def case_line(report: str, name: str) -> dict[str, str]:
    line = next(line for line in report.splitlines() if line.startswith(f"case={name} "))
    return dict(item.split("=", 1) for item in line.split())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_huge_photos_are_decoded_within_bounds_or_refused_in_words():
    done = subprocess.run([sys.executable, str(SCRIPT), "--uploads", "4"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=590)
    report = done.stdout + done.stderr
    print(report)
    assert done.returncode == 0, report

    grey = case_line(report, "png-grey")  # the attack's 46 KB PNG of 8000x6000: decoded, shrunk, kept
    assert (grey["statuses"], grey["added"], grey["failures"]) == ("200", "4", "0"), report

    colour = case_line(report, "png-colour")  # its decode needs more than a session's 200 MB: refused before decoding
    assert (colour["statuses"], colour["added"], colour["failures"]) == ("413", "0", "0"), report
    assert "would need about 280 MB of memory, more than this session has left of its 200 MB" in report

    same = case_line(report, "jpeg-same-x3")  # one 7000x7000 JPEG three times: decoded once, two copies skipped
    assert (same["statuses"], same["added"], same["skipped_duplicates"], same["failures"]) == ("200", "4", "8", "0"), report

    distinct = case_line(report, "jpeg-distinct-x3")  # three different 7000x7000 JPEGs: all kept
    assert (distinct["statuses"], distinct["added"], distinct["failures"]) == ("200", "12", "0"), report

    # After a 403 that left an 830 KB body unread, the same keep-alive connection still answers.
    assert re.search(r"^keepalive_after_refusal=ok ", report, re.M), report
    assert "server_errors_logged=0" in report, report
