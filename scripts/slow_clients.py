#!/usr/bin/env python3
"""Slow and idle clients against the real server, while ordinary visitors keep loading pages.

    .venv/bin/python scripts/slow_clients.py                  # straight to gunicorn
    .venv/bin/python scripts/slow_clients.py --through-nginx  # nginx in front (deploy/nginx)

Starts the production server (``gunicorn --config webapp/gunicorn_conf.py
wsgi:app``, demo mode) on a free loopback port, optionally behind Debian's
nginx with ``deploy/nginx/privascan-proxy.conf``, and waits for the model.
Then, from a separate process, it opens ``--attackers`` connections (200)
and keeps them open: half send one byte (``G``) and then nothing, half are
slowloris connections that send a request line and then one header line
every ``--drip`` seconds (5), never finishing. A connection the server closes
(its header timeout) is opened again at once, so the full number stays
open for the whole run. Meanwhile ``--clients`` visitors (10), each with its
own keep-alive connection and cookie, load the page and the status line in
a loop for ``--seconds`` (20). Every failed or non-200 request is a failure.

Prints the visitors' latency (p50, p95, max) and failures, and how many
slow connections were open, opened and closed by the server, and ends with
one line of figures:
``slow_clients via=direct attackers=200 open_mean=.. opened=.. clients=10 requests=N failures=0 p50_ms=.. p95_ms=.. max_ms=..``.
The client and the server share this machine's cores, so the latencies are
upper bounds. Exit status: 0 when no request failed, 1 otherwise, 2 when
the run could not be made. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time

from liveserver import Client, OutputTail, free_port, gunicorn_command, prepare_first_run_caches, server_environment, \
    wait_until_ready, REPO


# -- the slow connections (own process, own event loop) -----------------------------
async def _hold(port: int, kind: str, drip: float, stop: asyncio.Event, counts: dict) -> None:
    """Keep one slow connection open until ``stop``; reopen it whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["refused"] += 1
            await asyncio.sleep(0.2)
            continue
        counts["opened"] += 1
        counts["open"] += 1
        try:
            if kind == "idle":
                writer.write(b"G")
            else:
                writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            line = 0
            while not stop.is_set():
                # A read that returns (b"" or an answer) means the server ended it.
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=drip)
                except asyncio.TimeoutError:
                    if kind == "slowloris":
                        line += 1
                        writer.write(f"X-Slow-{line}: {line}\r\n".encode())
                        await writer.drain()
                    continue
                counts["closed_by_server"] += 1
                if data:
                    counts["answered"] += 1  # e.g. 408 or 400 before closing
                break
        except OSError:
            counts["closed_by_server"] += 1
        finally:
            counts["open"] -= 1
            writer.close()


def _attack(port: int, attackers: int, drip: float, ready, measuring, stop_flag, results) -> None:
    async def main():
        counts = {"opened": 0, "open": 0, "closed_by_server": 0, "answered": 0, "refused": 0}
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_hold(port, "idle" if i % 2 == 0 else "slowloris", drip, stop, counts))
                 for i in range(attackers)]
        while counts["open"] < attackers:
            await asyncio.sleep(0.05)
        ready.set()
        samples: list[int] = []
        while not stop_flag.is_set():
            await asyncio.sleep(0.05)
            if measuring.is_set():  # the visitors are running: sample how many slow connections are open
                samples.append(counts["open"])
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        results.update(counts, open_mean=statistics.fmean(samples) if samples else 0, open_min=min(samples, default=0),
                       open_max=max(samples, default=0))

    asyncio.run(main())


# -- the ordinary visitors ---------------------------------------------------------------
def _visit(port: int, until: float, latencies: list, failures: list) -> None:
    person = Client(port, timeout=30)
    while time.monotonic() < until:
        for path in ("/", "/status"):
            started = time.perf_counter()
            try:
                reply = person.open_page() if path == "/" else person.get(path)
                if reply.status != 200:
                    failures.append(f"{path}: HTTP {reply.status}")
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
                failures.append(f"{path}: {type(exc).__name__}: {exc}")
                person.close()
            latencies.append(time.perf_counter() - started)
        time.sleep(0.1)  # a person's pace, roughly: ten of them still make dozens of requests a second
    person.close()


def measure(port: int, clients: int, seconds: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_visit, args=(port, until, latencies, failures)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else float("nan")


def run(port: int, via: str, args, say) -> bool:
    baseline, base_failures = measure(port, args.clients, min(5.0, args.seconds))
    say(f"Without slow clients ({len(baseline)} requests): p50 {percentile(baseline, .5) * 1e3:.0f} ms, "
        f"p95 {percentile(baseline, .95) * 1e3:.0f} ms, failures {len(base_failures)}")

    context = multiprocessing.get_context("spawn")
    ready, measuring, stop_flag = context.Event(), context.Event(), context.Event()
    manager = context.Manager()
    results = manager.dict()
    attacker = context.Process(target=_attack, args=(port, args.attackers, args.drip, ready, measuring, stop_flag, results))
    attacker.start()
    if not ready.wait(60):
        stop_flag.set()
        attacker.join(30)
        raise RuntimeError(f"could not open {args.attackers} slow connections")
    measuring.set()
    latencies, failures = measure(port, args.clients, args.seconds)
    stop_flag.set()
    attacker.join(60)
    counts = dict(results)
    manager.shutdown()

    p50, p95, worst = (percentile(latencies, s) * 1e3 for s in (.5, .95, 1.0))
    say(f"With {args.attackers} slow connections ({args.attackers // 2} idle after one byte, "
        f"{args.attackers - args.attackers // 2} slowloris, a header line every {args.drip:g} s):")
    held = round(counts.get("open_mean", 0))
    say(f"  slow connections open meanwhile: {held} on average (min {counts.get('open_min', 0)}, max "
        f"{counts.get('open_max', 0)}: the server closes them on its header timeout and they reconnect at once); "
        f"opened {counts.get('opened', 0)} in all, closed by the server {counts.get('closed_by_server', 0)}, "
        f"refused {counts.get('refused', 0)}")
    say(f"  visitors: {args.clients}, {len(latencies)} requests in {args.seconds:g} s, failures {len(failures)}")
    say(f"  latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {worst:.0f} ms")
    for failure in failures[:10]:
        say(f"  failed: {failure}")
    say(f"slow_clients via={via} attackers={args.attackers} open_mean={held} opened={counts.get('opened', 0)} clients={args.clients} "
        f"requests={len(latencies)} failures={len(failures)} p50_ms={p50:.0f} p95_ms={p95:.0f} max_ms={worst:.0f} "
        f"closed_by_server={counts.get('closed_by_server', 0)}")
    return not failures and not base_failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--through-nginx", action="store_true", help="put nginx (deploy/nginx) in front")
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--drip", type=float, default=5, help="seconds between a slowloris connection's header lines")
    parser.add_argument("--gunicorn-arg", action="append", default=[],
                        help="extra gunicorn argument (e.g. --gunicorn-arg=--worker-class=gthread to compare)")
    args = parser.parse_args(argv)

    def say(text: str = "") -> None:
        print(text, flush=True)

    if args.through_nginx:
        from nginx_front import nginx_front, nginx_problem

        problem = nginx_problem()
        if problem:
            say(problem)
            return 2
    # The normal visitors all come from 127.0.0.1, each as fast as it can: the per-client rate
    # limit (webapp/rate_limit.py) would count them as one client and answer 429.
    env = server_environment(PRIVASCAN_RATE_LIMIT_ENABLED="0")
    prepare_first_run_caches(env)
    upstream = free_port()
    server = subprocess.Popen(gunicorn_command(upstream, *args.gunicorn_arg), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = OutputTail(server.stdout)
    try:
        wait_until_ready(upstream, 300, alive=lambda: server.poll() is None)
        say(f"Server: {' '.join(gunicorn_command(upstream, *args.gunicorn_arg)[1:])} (demo model ready)")
        front = nginx_front(upstream) if args.through_nginx else contextlib.nullcontext((upstream, None))
        with front as (port, _):
            if args.through_nginx:
                say(f"  behind nginx on port {port} (deploy/nginx/privascan-proxy.conf)")
            ok = run(port, "nginx" if args.through_nginx else "direct", args, say)
    except Exception as exc:  # noqa: BLE001
        say(f"The run could not be made: {type(exc).__name__}: {exc}")
        say(output.text()[-3000:])
        return 2
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
