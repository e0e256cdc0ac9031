#!/usr/bin/env python3
"""Analyses per minute in scale-out mode, with one and then two workers.

    .venv/bin/python scripts/scale_out_throughput.py [--photos 16] [--model DIR]

Starts a real redis-server (persistence off), two gunicorn web replicas and
N ``privascan worker`` processes on this machine (the fleet of
tests/test_scale_out.py), then four people, their requests alternating
between the replicas, add ``--photos`` photos in all and press "Analyze all";
the clock runs from the first press to the last card done. Prints one line
per worker count. With ``--model`` unset it builds the tests' tiny random
MedSigLIP in memory-backed /dev/shm, so the figures measure the fleet's
overhead (queueing, sealing, Redis round trips, polling), not MedSigLIP.
Nothing is a test; nothing here writes user data anywhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import photo_bytes  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402
from tests.test_scale_out import CARD, AlternatingBrowser, _upload, fleet  # noqa: E402


def run(model_dir: str, workers: int, photos: int, people: int = 4) -> float:
    with redis_server() as url, fleet(url, model_dir, replicas=2, workers=workers,
                                      PRIVASCAN_QUEUE_SIZE=str(photos * 2),
                                      # all the simulated people share 127.0.0.1: no per-client rate limit
                                      PRIVASCAN_RATE_LIMIT_ENABLED="0") as (ports, _, _):
        browsers = [AlternatingBrowser(ports) for _ in range(people)]
        cards = []
        for index, browser in enumerate(browsers):
            browser.open_page()
            for seed in range(index, photos, people):
                assert browser.request("POST", "/photos", **_upload(photo_bytes(seed), f"p{seed}.jpg"))[0] == 200
            cards.append(CARD.findall(browser.request("GET", "/", htmx=False)[1].decode()))
        started = time.perf_counter()
        for browser in browsers:
            assert browser.request("POST", "/analyze-all")[0] == 200
        waiting = {(i, card) for i, ids in enumerate(cards) for card in ids}
        while waiting:
            for i, card in list(waiting):
                html = browsers[i].request("GET", f"/photos/{card}/card")[1].decode()
                if 'data-state="done"' in html or 'data-state="error"' in html:
                    waiting.discard((i, card))
            time.sleep(0.2)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--model", help="model directory (default: the tests' tiny random model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="privascan-tiny-", dir="/dev/shm") as scratch:  # removed afterwards
        model_dir = args.model
        if model_dir is None:
            from plugins.medsiglip.tiny_model import build_tiny_siglip

            model_dir = str(build_tiny_siglip(Path(scratch)))
        for workers in (1, 2):
            seconds = run(model_dir, workers, args.photos)
            print(f"workers={workers} photos={args.photos} seconds={seconds:.1f} "
                  f"analyses_per_minute={args.photos / seconds * 60:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
