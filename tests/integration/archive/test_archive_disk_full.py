"""A full archive file system: nothing committed, retried with backoff, alerted through the
log and the metrics, and everything archived once space returns."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.model import JobEvent

MakeEvent = Callable[..., JobEvent]
Harness = Any  # the harness type lives in conftest.py, which test modules cannot import


@pytest.fixture
def small_archive(archive_root: Path, tmpfs: Callable[[Path, str], Path]) -> Path:
    """The archive root as a 1 MiB tmpfs."""
    return tmpfs(archive_root, "size=1m,mode=0755")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_disk_full_holds_the_commit_until_space_returns_then_archives_everything(
        small_archive: Path, archive_runner: Harness, make_slurm_event: MakeEvent) -> None:
    runner = archive_runner
    events = [make_slurm_event(0, script_bytes=2_000_000)] + [
        make_slurm_event(i) for i in range(1, 6)]
    (big_partition, big_offset), *_ = runner.produce(events)
    port = free_port()
    process = runner.start("--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    runner.wait_until(lambda: 'sarchive_archive_io_errors_total{error="ENOSPC"}' in scrape(port)
                      if "No space left" in process.log() else False, 60,
                      "the consumer reports the full disk")
    time.sleep(2)  # several retries
    metrics = scrape(port)
    assert 'sarchive_consumer_sink_up{service="sarchive-archive"} 0.0' in metrics
    assert runner.committed()[big_partition] <= big_offset  # not past the unwritten job
    assert runner.temporary_files() == []

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_archive)], check=True)
    runner.wait_committed_to_end()
    assert 'sarchive_consumer_sink_up{service="sarchive-archive"} 1.0' in scrape(port)
    assert process.stop() == 0
    expected: dict[str, bytes] = {}
    for event in events:
        expected.update(runner.expected_files(event))
    archived = runner.archived()
    assert {p: c for p, c in archived.items() if not p.endswith(".json")} == expected
    assert runner.temporary_files() == []
