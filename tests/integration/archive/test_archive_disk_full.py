"""A full archive file system: nothing committed, retried with backoff, alerted through the
log and the metrics, and everything archived once space returns."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from schemas.model import JobEvent

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner

MakeEvent = Callable[..., JobEvent]
ARCHIVE = {"service": "sarchive-archive"}


@pytest.fixture
def small_archive(archive_root: Path, tmpfs: Callable[[Path, str], Path]) -> Path:
    """The archive root as a 1 MiB tmpfs."""
    return tmpfs(archive_root, "size=1m,mode=0755")


def test_disk_full_holds_the_commit_until_space_returns_then_archives_everything(
        small_archive: Path, archive_runner: ArchiveRunner, make_slurm_event: MakeEvent) -> None:
    runner = archive_runner
    events = [make_slurm_event(0, script_bytes=2_000_000)] + [
        make_slurm_event(i) for i in range(1, 6)]
    (big_partition, big_offset), *_ = runner.produce(events)
    process = runner.start(metrics=True)
    process.wait_for_log("No space left", timeout=60)
    process.wait_for_metric("sarchive_archive_io_errors_total", lambda v: v >= 1,
                            labels={"error": "ENOSPC"})
    process.wait_for_metric("sarchive_consumer_sink_unavailable_total", lambda v: v >= 3,
                            labels=ARCHIVE, timeout=60)  # several retries
    assert process.metric("sarchive_consumer_sink_up", ARCHIVE) == 0
    assert runner.committed()[big_partition] <= big_offset  # not past the unwritten job
    assert runner.temporary_files() == []

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_archive)], check=True)
    runner.wait_committed_to_end()
    assert process.metric("sarchive_consumer_sink_up", ARCHIVE) == 1
    assert process.stop() == 0
    expected: dict[str, bytes] = {}
    for event in events:
        expected.update(runner.expected_files(event))
    archived = runner.archived()
    assert {p: c for p, c in archived.items() if not p.endswith(".json")} == expected
    assert runner.temporary_files() == []
