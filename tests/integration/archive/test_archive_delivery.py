"""sarchive-archive against the real broker: every job exactly once, through crashes,
rebalances and replays.

The archive_runner fixture (conftest.py) is the harness: it produces events, starts
sarchive-archive subprocesses, and reads back the archive and the group's offsets.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from schemas.model import JobEvent

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner

MakeEvent = Callable[..., JobEvent]
OWNS = "assigned ['"  # the runner's log line for a non-empty assignment


def expected_archive(runner: ArchiveRunner, events: list[JobEvent]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for event in events:
        files.update(runner.expected_files(event))
    return files


def data_files(archived: dict[str, bytes]) -> dict[str, bytes]:
    return {
        path: content for path, content in archived.items() if not path.endswith("_metadata.json")
    }


def sidecars(archived: dict[str, bytes]) -> list[str]:
    return [path for path in archived if path.endswith("_metadata.json")]


def test_n_events_become_n_file_sets_byte_identical_with_modes(
    archive_runner: ArchiveRunner, make_slurm_event: MakeEvent
) -> None:
    runner = archive_runner
    events = [make_slurm_event(i) for i in range(40)]
    runner.produce(events)
    process = runner.start("--file-mode", "0640", "--dir-mode", "0750")
    runner.wait_committed_to_end()
    assert process.stop() == 0
    archived = runner.archived()
    assert data_files(archived) == expected_archive(runner, events)
    assert len(sidecars(archived)) == 40
    assert sorted({path.split("/")[0] for path in archived}) == [
        "20240315",
        "20240316",
        "20240317",
        "20240318",
    ]
    for path in archived:
        assert stat.S_IMODE((runner.root / path).stat().st_mode) == 0o640
    for day in runner.root.iterdir():
        assert stat.S_IMODE(day.stat().st_mode) == 0o750


@pytest.mark.parametrize("named_temporaries", [False, True],
                         ids=["unnamed-files", "named-temporaries"])
def test_sigkill_in_the_middle_of_a_batch_then_restart_archives_each_job_exactly_once(
        archive_runner: ArchiveRunner, make_slurm_event: MakeEvent,
        named_temporaries: bool) -> None:
    runner = archive_runner
    events = [make_slurm_event(i, script_bytes=20_000) for i in range(150)]
    runner.produce(events)
    # Killed at its 100th link: a third of the way through the first batch's files.
    crashed = runner.start("--batch-max-messages", "150", crash_at_link=100,
                           named_temporaries=named_temporaries)
    assert crashed.wait(60) == -9
    assert 0 < len(runner.archived()) < 3 * len(events), "no half-written batch to recover"
    if named_temporaries:
        assert runner.temporary_files(), "the named fallback left no temporary files"
    else:
        assert runner.temporary_files() == []  # files without a name vanish with the process
    assert runner.committed() != runner.end_offsets()
    restarted = runner.start()
    runner.wait_committed_to_end()
    assert restarted.stop() == 0
    archived = runner.archived()
    assert data_files(archived) == expected_archive(runner, events)
    assert len(sidecars(archived)) == 150  # no job stored a second time beside itself
    assert runner.temporary_files() == []
    assert ("temporary files of an interrupted write" in restarted.log()) == named_temporaries


def test_two_consumers_in_one_group_one_killed_the_other_takes_over(
    archive_runner: ArchiveRunner, make_slurm_event: MakeEvent
) -> None:
    runner = archive_runner
    first_wave = [make_slurm_event(i) for i in range(30)]
    second_wave = [make_slurm_event(i) for i in range(30, 60)]
    a = runner.start()
    b = runner.start()
    runner.wait_until(
        lambda: OWNS in a.log() and OWNS in b.log(), 60, "both members own partitions"
    )
    runner.produce(first_wave)
    runner.wait_committed_to_end()
    a.kill()
    runner.produce(second_wave)
    runner.wait_committed_to_end(timeout=90)
    assert b.log().count(OWNS) >= 2, "b never took over a's partitions"
    assert b.stop() == 0
    assert data_files(runner.archived()) == expected_archive(runner, first_wave + second_wave)
    assert runner.temporary_files() == []


def test_replay_of_the_whole_topic_from_offset_zero_leaves_the_archive_unchanged(
    archive_runner: ArchiveRunner, make_slurm_event: MakeEvent
) -> None:
    runner = archive_runner
    events = [make_slurm_event(i) for i in range(30)]
    runner.produce(events)
    first = runner.start()
    runner.wait_committed_to_end()
    assert first.stop() == 0
    before = runner.tree()
    newest = max(mtime for *_, mtime in before.values())
    probe = runner.root.parent / "mtime-probe"

    def clock_moved() -> bool:
        probe.touch()
        return probe.stat().st_mtime_ns > newest
    # Any rewrite must show as a newer mtime: wait until the file system's clock says later.
    runner.wait_until(clock_moved, 10, "the file system's clock has passed the newest mtime")
    replay = runner.start(group="replay-from-zero")
    runner.wait_committed_to_end(group="replay-from-zero")
    assert replay.stop() == 0
    assert runner.tree() == before
    assert replay.log().count("archived job") == 0
