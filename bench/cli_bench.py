"""`sarchive show` and `search` timed as processes, start to exit, on 100,000 generated jobs:
a scratch file archive (daily layout, one year of directories, written by the archive
layout and sidecar functions, without fsync) and a scratch Elasticsearch index (bulk, refresh
off during the load), timed as the `sarchive` console script. Prints p50 and p95 and the load
average around the runs. Usage: python -m bench.cli_bench [--jobs N] [--runs N] [--es-url URL]"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testkit.archives import delete_prefix, generated, load_index, write_archive

# The console script users run (its start-up included), beside the interpreter running this.
SARCHIVE = str(Path(sys.executable).with_name("sarchive"))


def timed(argv: list[str], runs: int) -> tuple[float, float]:
    """p50 and p95 seconds of `sarchive` as a process, start to exit."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([SARCHIVE, *argv], capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{argv}: {done.stderr.decode()}")
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return statistics.median(times), cuts[18]


def milliseconds(p50_p95: tuple[float, float]) -> str:
    return f"p50 {p50_p95[0] * 1000:5.0f} ms, p95 {p50_p95[1] * 1000:5.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--es-url", default="http://127.0.0.1:19200")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs: at least 2 (a p95 needs two runs)")
    events = generated(args.jobs)
    probe = events[len(events) // 2]
    prefix = f"sarchive-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="sarchive-cli-bench-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        write_archive(root, events)
        print(f"archive of {args.jobs} jobs written in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        load_index(args.es_url, prefix, events)
        print(f"index of {args.jobs} jobs loaded in {time.perf_counter() - started:.1f} s")
        try:
            backends = {"archive": ["--archive", str(root), "--time-zone", "UTC"],
                        "elasticsearch": ["--es-url", args.es_url, "--index", prefix]}
            month = ["--user", "user7", "--since", "2024-06-01", "--until", "2024-06-30",
                     "--limit", "0"]
            print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            for name, backend in backends.items():
                show = timed(["show", probe.job_id, *backend], args.runs)
                search = timed(["search", *month, *backend], args.runs)
                print(f"{name:14} show {milliseconds(show)}   search of one user's month"
                      f" {milliseconds(search)}")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            delete_prefix(args.es_url, prefix)


if __name__ == "__main__":
    main()
