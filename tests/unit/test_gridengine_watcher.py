"""The inotify adapter on a synthetic Grid Engine classic spool (real inotify): records found
at every level of jobs/ with watch-then-scan, an array job's directory watched for its
`common`, job_scripts/ close-writes reported as updates only, removals and lost events."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.jobs import JobRef
from producer.watcher import SpoolChanges, SpoolWatcher
from schemas.model import Scheduler
from testkit.watching import names, read_until

if TYPE_CHECKING:
    from testkit.spool import SyntheticGridEngineSpool
    from tests.conftest import ScriptedInotify




def started(spool: SyntheticGridEngineSpool, **kwargs: Any) -> tuple[SpoolWatcher, SpoolChanges]:
    watcher = SpoolWatcher(Scheduler.GRIDENGINE, spool.root, **kwargs)
    changes = watcher.start()
    assert changes is not None
    return watcher, changes


def test_records_present_at_start_are_found_in_both_forms_by_their_record_path(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    gridengine_spool.write_job(11, b"#!/bin/sh\n", b"record 11")
    gridengine_spool.write_job(10012, b"#!/bin/sh\n", b"record", array=True)
    gridengine_spool.write_job(13, None, b"binary job's record")
    (gridengine_spool.record_path(14).parent / ".0014").write_bytes(b"half")  # temporary
    (gridengine_spool.root / "messages").write_bytes(b"qmaster log")
    watcher, changes = started(gridengine_spool)
    found = {job.name: job for job in changes.touched}
    assert set(found) == {"jobs/00/0000/0011", "jobs/00/0001/0012", "jobs/00/0000/0013"}
    assert found["jobs/00/0000/0011"].label == "11"
    assert found["jobs/00/0001/0012"].directory == gridengine_spool.root / "jobs/00/0001"
    assert found["jobs/00/0001/0012"].base == "0012"
    watcher.close()


def test_a_level_created_with_its_first_record_in_the_same_instant_is_not_missed(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    """A new 0001/ (every 10,000 ids) appears with its first record: the watch is added
    before the directory is listed, so a record renamed in before the watch is listed."""
    watcher, _ = started(gridengine_spool)
    gridengine_spool.write_job(20, b"#!/bin/sh\n", b"record")
    gridengine_spool.write_job(10_000, b"#!/bin/sh\n", b"record")  # jobs/00/0001/0000
    gridengine_spool.write_job(4_000_010_000, b"#!/bin/sh\n", b"record")  # jobs/40/0001/...
    changes = read_until(watcher, lambda c: len(names(c.touched)) >= 3)
    assert names(changes.touched) == {"jobs/00/0000/0020", "jobs/00/0001/0000",
                                      "jobs/40/0001/0000"}
    watcher.close()


def test_a_rewritten_record_is_touched_again_and_its_removal_reported_gone(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    gridengine_spool.write_job(21, b"#!/bin/sh\n", b"pending")
    watcher, _ = started(gridengine_spool)
    gridengine_spool.write_record(21, b"running")
    assert names(read_until(watcher, lambda c: c.touched).touched) == {"jobs/00/0000/0021"}
    gridengine_spool.record_path(21).unlink()
    (gridengine_spool.root / "job_scripts" / "21").unlink()
    changes = read_until(watcher, lambda c: c.gone)
    assert names(changes.gone) == {"jobs/00/0000/0021"} and not changes.touched
    watcher.close()


def test_an_array_jobs_directory_is_detected_and_its_watch_reports_common(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    watcher, _ = started(gridengine_spool)
    directory = gridengine_spool.record_path(30)
    directory.mkdir(parents=True)
    changes = read_until(watcher, lambda c: c.touched)
    [job] = changes.touched
    assert job.name == "jobs/00/0000/0030"
    assert watcher.watch_job(job)
    held = watcher.watch_count
    (directory / "1-4096").mkdir()  # its tasks' files: not the record
    gridengine_spool.write_record(30, b"record", array=True)
    assert read_until(watcher, lambda c: c.touched).touched == [job]
    watcher.release(job)
    assert watcher.watch_count == held - 1
    shutil.rmtree(directory)
    assert names(read_until(watcher, lambda c: c.gone).gone) == {"jobs/00/0000/0030"}
    watcher.close()


def test_a_plain_record_needs_no_watch_of_its_own(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    gridengine_spool.write_job(31, b"#!/bin/sh\n", b"record")
    watcher, changes = started(gridengine_spool)
    held = watcher.watch_count
    [job] = changes.touched
    assert watcher.watch_job(job) and watcher.watch_count == held
    watcher.close()


def test_a_scripts_close_write_is_an_update_of_its_job_never_a_detection(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    gridengine_spool.write_script(40, b"#!/bin/sh\n")  # at start: not a job of its own
    watcher, changes = started(gridengine_spool)
    assert changes.touched == []
    gridengine_spool.write_script(41, b"#!/bin/sh\n")
    (gridengine_spool.root / "job_scripts" / "notes").write_bytes(b"x")
    changes = read_until(watcher, lambda c: c.updated)
    assert changes.touched == []
    [job] = changes.updated
    assert job == JobRef(Scheduler.GRIDENGINE, "jobs/00/0000/0041",
                         gridengine_spool.root / "jobs/00/0000", "0041")
    watcher.close()


def test_levels_removed_when_empty_and_created_again_are_followed_again(
        gridengine_spool: SyntheticGridEngineSpool) -> None:
    gridengine_spool.write_job(50, b"#!/bin/sh\n", b"record")
    watcher, _ = started(gridengine_spool)
    shutil.rmtree(gridengine_spool.root / "jobs" / "00")  # the qmaster's rmdir of empty levels
    read_until(watcher, lambda c: c.gone)
    gridengine_spool.write_job(51, b"#!/bin/sh\n", b"record")
    assert names(read_until(watcher, lambda c: c.touched).touched) == {"jobs/00/0000/0051"}
    watcher.close()


def test_the_jobs_tree_created_after_start_is_watched_then_scanned(
        tmp_path: Path) -> None:
    spool = tmp_path / "qmaster"
    spool.mkdir()
    watcher = SpoolWatcher(Scheduler.GRIDENGINE, spool)
    assert watcher.start() is not None
    (spool / "job_scripts").mkdir()
    (spool / "jobs" / "00" / "0000").mkdir(parents=True)
    (spool / "jobs" / "00" / "0000" / "0007").write_bytes(b"record")
    changes = read_until(watcher, lambda c: c.touched)
    assert names(changes.touched) == {"jobs/00/0000/0007"}
    (spool / "job_scripts" / "8").write_bytes(b"#!/bin/sh\n")
    assert names(read_until(watcher, lambda c: c.updated).updated) == {"jobs/00/0000/0008"}
    watcher.close()


def test_overflow_rescans_the_jobs_tree_and_finds_records_whose_events_were_lost(
        gridengine_spool: SyntheticGridEngineSpool,
        scripted_inotify: Any) -> None:
    inotify: ScriptedInotify = scripted_inotify()
    watcher, _ = started(gridengine_spool, inotify_factory=lambda: inotify)
    inotify.drop_events()
    for job_id in range(9_990, 10_010):  # across a new 0001/ level
        gridengine_spool.write_job(job_id, b"#!/bin/sh\n", b"record")
    assert inotify.queued()
    assert watcher.read().touched == []
    inotify.overflow()
    changes = watcher.read()
    assert changes.overflow and changes.full_scan
    assert len(names(changes.touched)) == 20
    watcher.close()


def test_a_symlink_planted_as_a_level_is_rejected_not_followed(
        gridengine_spool: SyntheticGridEngineSpool, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "0000").mkdir(parents=True)
    (elsewhere / "0000" / "0001").write_bytes(b"record")
    (gridengine_spool.root / "jobs" / "00").symlink_to(elsewhere)
    watcher, changes = started(gridengine_spool)
    assert changes.touched == []
    assert [(r.path.name, r.reason) for r in changes.rejected] == [("00", "symlink")]
    watcher.close()
