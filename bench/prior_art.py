#!/usr/bin/env python3
"""The prior art beside us: the Rust sarchive (crates.io `sarchive`) with its file backend.

It is built once with `cargo install sarchive --root ~/.cache/sarchive-bench` and run on a
spool of the same generated jobs (same seed, same bytes) as our pipeline. What it does per job
(read from its 0.16 source): an inotify watch on each of hash.0..hash.9, which must exist at
start (slurmctld creates them lazily; we create all ten first so it can start); on a new
job.<id> directory it waits until 2 s after the event, reads `script` and `environment`, and
writes job.<id>_script and job.<id>_environment into the archive directory (no fsync).

Throughput: a burst of jobs written as fast as possible, counted from the burst's start to
the last archived file. Latency: jobs at a steady rate, from the script's close to the moment
the job's last file got its name in the archive (its ctime). Our pipeline is measured the
same way (stages.spool_to_archive).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import spoolgen
from baselines import latency_summary
from harness import BenchError, Service, scratch
from stages import archived_times

from infra.apt import apt_install
from infra.service import ServiceError
from testkit.waiting import wait_until

CACHE_DIR = Path(os.environ.get("SARCHIVE_BENCH_CACHE",
                                Path.home() / ".cache" / "sarchive-bench"))
CRATE = "sarchive"
BUILD_TIMEOUT = 1800
# Seconds without a new archived file after which the prior art is taken to have finished.
IDLE_TIMEOUT = 10.0
# Its --cluster is only a label in its output.
CLUSTER = "bench"
# Debian packages the crate's build needs: its rdkafka-sys links libsasl2, found with
# pkg-config (`find_sasl` fails without either). Each is checked on its own: the Makefile once
# tested both in one dpkg-query, which passed with pkg-config alone.
BUILD_PACKAGES = ("libsasl2-dev", "pkg-config")


class PriorArtUnavailableError(Exception):
    """The comparison cannot run here (no cargo, build failed, not built in smoke mode)."""


def binary_path(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / "bin" / CRATE


def ensure_binary(cache_dir: Path = CACHE_DIR, build: bool = True) -> Path:
    """The installed binary; built with cargo first when allowed and missing."""
    binary = binary_path(cache_dir)
    if binary.exists():
        return binary
    if not build:
        raise PriorArtUnavailableError(
            f"{binary} is not built (the smoke run does not build it; `make bench` does)")
    cargo = shutil.which("cargo")
    if cargo is None:
        raise PriorArtUnavailableError("cargo is not installed: cannot build the Rust sarchive")
    try:
        apt_install(BUILD_PACKAGES)
    except ServiceError as exc:
        raise PriorArtUnavailableError(
            f"cannot install the build's Debian packages {', '.join(BUILD_PACKAGES)}: {exc}"
        ) from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    log = cache_dir / "cargo-install.log"
    with log.open("wb") as output:
        try:
            result = subprocess.run([cargo, "install", CRATE, "--root", str(cache_dir)],
                                    stdout=output, stderr=subprocess.STDOUT,
                                    timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PriorArtUnavailableError(
                f"cargo install {CRATE} did not finish in {BUILD_TIMEOUT} s") from exc
    if result.returncode != 0 or not binary.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise PriorArtUnavailableError(f"cargo install {CRATE} failed; see {log}:\n{tail}")
    return binary


def version(binary: Path) -> str:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                            timeout=30, check=False)
    return result.stdout.strip() or "unknown"


def _wait_archived(archive: Path, service: Service, expected: int) -> None:
    """Until every job's two files are there, or nothing new came for IDLE_TIMEOUT."""
    seen, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < IDLE_TIMEOUT:
        service.require_alive()
        count = sum(1 for _ in os.scandir(archive))
        if count >= 2 * expected:
            return
        if count != seen:
            seen, last_change = count, time.monotonic()
        time.sleep(0.2)


def run_once(binary: Path, jobs: Sequence[spoolgen.SpoolJob], rate: float | None,
             workdir: Path) -> dict[str, float]:
    """Run the prior art on a fresh spool while `jobs` are written at `rate` (None: burst)."""
    spool, archive = workdir / "spool", workdir / "archive"
    for hash_index in range(10):
        (spool / f"hash.{hash_index}").mkdir(parents=True)
    archive.mkdir()
    service = Service("sarchive (Rust)", [str(binary), "--cluster", CLUSTER, "--spool",
                                          str(spool), "--scheduler", "slurm", "--logfile",
                                          str(workdir / "sarchive.log"), "file", str(archive),
                                          "none"], workdir / "stdout.log")
    with service:
        wait_until(lambda: (workdir / "sarchive.log").exists()
                 and (workdir / "sarchive.log").read_text().count("Watching path") >= 10,
                 30, "the Rust sarchive to watch its ten hash directories")
        writer = spoolgen.SlurmSpoolWriter(spool, "vectored")
        run = spoolgen.write_paced(writer.write, jobs, rate)
        _wait_archived(archive, service, len(jobs))
        rss = service.peak_rss_mb()
    archived = {j: t for j, t in archived_times(archive).items() if j in run.closed_at}
    if not archived:
        raise BenchError("the Rust sarchive archived nothing; log tail:\n"
                         + service.log_tail())
    latencies = [(archived[j] - closed) * 1000 for j, closed in run.closed_at.items()
                 if j in archived]
    return {"jobs": float(len(jobs)), "archived": float(len(archived)),
            "lost": float(len(jobs) - len(archived)), "write_rate": run.rate,
            "throughput": len(archived) / (max(archived.values()) - run.started),
            "peak_rss_mb": rss, **latency_summary(latencies)}


def measure(binary: Path, seed: int, count: int, latency_count: int, *, rate: float,
            first_id: int = 1) -> dict[str, dict[str, float]]:
    """Throughput on a burst of `count` jobs; latency on `latency_count` jobs at `rate`/s."""
    burst_jobs = spoolgen.make_jobs(seed, count, first_id)
    steady_jobs = spoolgen.make_jobs(seed, latency_count, first_id + count)
    results: dict[str, dict[str, float]] = {}
    for name, jobs, pace in (("burst", burst_jobs, None), ("steady", steady_jobs, rate)):
        with scratch(f"prior-{name}") as workdir:
            results[name] = run_once(binary, jobs, pace, workdir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prior_art.py", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="jobs in the burst")
    parser.add_argument("--latency-count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args(argv)
    try:
        binary = ensure_binary(build=not args.no_build)
    except PriorArtUnavailableError as exc:
        print(f"prior art skipped: {exc}", file=sys.stderr)
        return 0
    print(json.dumps({"version": version(binary),
                      **measure(binary, args.seed, args.count, args.latency_count,
                                 rate=args.rate)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
