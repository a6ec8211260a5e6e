"""sarchive-web under open-loop load on 100,000 generated jobs in a scratch Elasticsearch
index: job page and search page latencies at a steady rate (requests sent on a fixed
schedule whatever the answers do, latency counted from the scheduled send, so a slow
server cannot slow the load down), then the rate stepped up until the job page's p95 passes
1 s. sarchive-web runs as its own process (waitress) on loopback with the access filter of
an ordinary user; Elasticsearch shares the machine. Each phase also prints the CPU time the
web process and the Elasticsearch node spent per request (the node's includes whatever else
it served meanwhile) and the load averages.
Usage: python bench/web_bench.py [--jobs N] [--rate R] [--duration S] [--es-url URL]"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from elasticsearch import Elasticsearch
from harness import percentile

from testkit.archives import USERS, delete_prefix, generated, load_index
from testkit.processes import ServiceProcess, free_port
from testkit.web import web_get

STEP_RATES = (50, 100, 150, 200, 300, 400, 600)
STEP_SECONDS = 20.0
SEQUENTIAL = 100
WORKERS = 256  # enough that the load is never limited by the client's threads


def fetch(port: int, path: str, user: str) -> int:
    return web_get(f"http://127.0.0.1:{port}", path, user).status


class CpuMeter:
    """CPU seconds spent by the web process (/proc) and the Elasticsearch node (its process
    stats), read around a phase."""

    # The node refreshes its process figures once a second: over a shorter phase its
    # difference says nothing.
    NODE_PHASE_MIN = 10.0

    def __init__(self, server_pid: int, es: Elasticsearch) -> None:
        self._server_pid = server_pid
        self._es = es

    def read(self) -> tuple[float, float, float]:
        """(web process CPU s, node CPU s, monotonic s)."""
        with open(f"/proc/{self._server_pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        server = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        nodes = self._es.nodes.stats(node_id="_local", metric="process")["nodes"]
        node = sum(n["process"]["cpu"]["total_in_millis"] for n in nodes.values()) / 1000
        return server, node, time.monotonic()

    def per_request(self, before: tuple[float, float, float], requests: int) -> str:
        after = self.read()
        node = (f", Elasticsearch {(after[1] - before[1]) / requests * 1000:.1f} ms"
                if after[2] - before[2] >= self.NODE_PHASE_MIN else "")
        return (f"CPU per request: web {(after[0] - before[0]) / requests * 1000:.1f} ms"
                f"{node}; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def open_loop(port: int, rate: float, seconds: float,
              next_request: Callable[[], tuple[str, str]]) -> tuple[list[float], int]:
    """Latencies (s) of rate requests a second for seconds, each from its scheduled start;
    and how many failed (not 200)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def one(scheduled: float, path: str, user: str) -> None:
        status = fetch(port, path, user)
        elapsed = time.perf_counter() - scheduled
        with lock:
            latencies.append(elapsed)
            if status != 200:
                failures[0] += 1

    with ThreadPoolExecutor(WORKERS) as pool:
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            path, user = next_request()
            pool.submit(one, scheduled, path, user)
    return latencies, failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--es-url", default="http://127.0.0.1:19200")
    args = parser.parse_args()
    events = generated(args.jobs)
    prefix = f"sarchive-webbench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    load_index(args.es_url, prefix, events)
    print(f"index of {args.jobs} jobs loaded in {time.perf_counter() - started:.1f} s")
    port = free_port()
    randomness = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="sarchive-web-bench-") as scratch:
        # The generated jobs' owners (as a scheduler would give them) are bench users, so an
        # ordinary user's access filter has something to match.
        server = ServiceProcess(
            "sarchive-web",
            [sys.executable, "-m", "web.main", "--es-url", args.es_url, "--index", prefix,
             "--port", str(port), "--trusted-proxy", "127.0.0.1", "--log-level", "WARNING"],
            Path(scratch) / "sarchive-web.log").start()
        try:
            server.wait_until(lambda: _answers(port), 30, "sarchive-web answers")

            def job_page() -> tuple[str, str]:
                event = events[randomness.randrange(len(events))]
                return f"/jobs/{quote(event.job_key, safe=':')}", str(event.user)

            def search_page() -> tuple[str, str]:
                user = f"user{randomness.randrange(USERS)}"
                module = f"gcc/{9 + randomness.randrange(4)}"
                return f"/?module={quote(module)}&text=srun", user

            meter = CpuMeter(server.pid, Elasticsearch(args.es_url))
            print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for name, request in (("job page", job_page), ("search page", search_page)):
                # One at a time first: the service time, without queueing.
                before = meter.read()
                alone = [_timed_fetch(port, *request()) for _ in range(SEQUENTIAL)]
                print(f"{name:12} one at a time ({SEQUENTIAL}): p50"
                      f" {percentile(alone, 0.5) * 1000:6.1f} ms  p95"
                      f" {percentile(alone, 0.95) * 1000:6.1f} ms;"
                      f" {meter.per_request(before, SEQUENTIAL)}")
                before = meter.read()
                latencies, failed = open_loop(port, args.rate, args.duration, request)
                print(f"{name:12} at {args.rate:g}/s for {args.duration:g} s:"
                      f" p50 {percentile(latencies, 0.5) * 1000:6.1f} ms"
                      f"  p95 {percentile(latencies, 0.95) * 1000:6.1f} ms"
                      f"  p99 {percentile(latencies, 0.99) * 1000:6.1f} ms"
                      f"  failed {failed}; {meter.per_request(before, len(latencies))}")
            for rate in STEP_RATES:
                before = meter.read()
                latencies, failed = open_loop(port, rate, STEP_SECONDS, job_page)
                p95 = percentile(latencies, 0.95)
                print(f"job page at {rate:4d}/s for {STEP_SECONDS:g} s: p50"
                      f" {percentile(latencies, 0.5) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f}"
                      f" ms  failed {failed}; {meter.per_request(before, len(latencies))}")
                if p95 > 1.0:
                    break
        finally:
            server.stop(30)
            delete_prefix(args.es_url, prefix)


def _timed_fetch(port: int, path: str, user: str) -> float:
    started = time.perf_counter()
    fetch(port, path, user)
    return time.perf_counter() - started


def _answers(port: int) -> bool:
    try:
        return fetch(port, "/", "user0") == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
