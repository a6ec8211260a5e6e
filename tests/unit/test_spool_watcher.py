"""The inotify adapter against real inotify on a synthetic spool: watch-then-scan at every
level, Slurm's own files ignored, lost events turned into a full rescan, limits handled."""

from __future__ import annotations

import errno
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import INotify

from producer.watcher import SpoolWatcher
from schemas.model import Scheduler
from testkit.waiting import wait_until
from testkit.watching import names, read_until

TORQUE_FIXTURE = Path(__file__).parent.parent / "fixtures" / "torque" / "server_priv" / "jobs"




def test_spool_missing_at_start_is_waited_for_then_scanned(synthetic_spool: Any) -> None:
    spool = synthetic_spool.root / "not-yet"
    watcher = SpoolWatcher(Scheduler.SLURM, spool)
    assert watcher.start() is None and not watcher.started
    spool.mkdir()
    synthetic_spool.root = spool
    synthetic_spool.write_job(7, b"#!/bin/sh\n")
    changes = watcher.start()
    assert changes is not None and changes.full_scan
    assert names(changes.touched) == {"hash.7/job.7"}
    watcher.close()


def test_jobs_before_and_after_start_are_found_in_lazily_created_hash_dirs(
        synthetic_spool: Any) -> None:
    synthetic_spool.write_job(11, b"#!/bin/sh\n")
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root)
    started = watcher.start()
    assert started is not None and names(started.touched) == {"hash.1/job.11"}
    synthetic_spool.write_job(23, b"#!/bin/sh\n")  # hash.3 does not exist yet
    synthetic_spool.write_job(31, b"#!/bin/sh\n")  # hash.1 exists
    changes = read_until(watcher, lambda c: {"hash.3/job.23", "hash.1/job.31"} <= names(
        c.touched))
    assert not changes.full_scan
    watcher.close()


def test_slurm_state_files_and_unknown_names_are_ignored(synthetic_spool: Any) -> None:
    root = synthetic_spool.root
    watcher = SpoolWatcher(Scheduler.SLURM, root)
    assert watcher.start() is not None
    for name in ("job_state", "job_state.new", "node_state.old", "hash.x", "hash.12"):
        (root / name).write_bytes(b"state")
    (root / "job_state.new").rename(root / "job_state")
    (root / "hash.12").unlink()
    (root / "hash.12").mkdir()
    synthetic_spool.write_job(5, b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: c.touched)
    assert names(changes.touched) == {"hash.5/job.5"}
    watcher.close()


def test_job_directory_watch_reports_its_files_close_writes_until_released(
        synthetic_spool: Any) -> None:
    directory = synthetic_spool.job_dir(42)
    directory.mkdir(parents=True)
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root)
    started = watcher.start()
    assert started is not None
    [job] = started.touched
    assert watcher.watch_job(job)
    held = watcher.watch_count
    synthetic_spool.write_file(directory / "environment", b"\0\0\0\0")
    synthetic_spool.write_file(directory / "unrelated", b"x")
    changes = read_until(watcher, lambda c: c.touched)
    assert changes.touched == [job]
    watcher.release(job)
    assert watcher.watch_count == held - 1
    synthetic_spool.write_file(directory / "script", b"x\0")
    # The kernel queues inotify events within the syscall that causes them: this read gets
    # any event the write caused, and the watcher must ignore it.
    assert watcher.read().touched == []
    watcher.close()


class GatedINotify(INotify):  # type: ignore[misc]  # inotify_simple is untyped: INotify is Any
    """Real inotify whose watch removals wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.removed: list[int] = []

    def rm_watch(self, wd: int) -> None:
        self.gate.wait(5)
        super().rm_watch(wd)
        self.removed.append(wd)


def test_job_watched_again_before_its_queued_removal_keeps_its_watch(
        synthetic_spool: Any) -> None:
    """inotify hands back the same descriptor for the same directory: a removal queued by
    release() must not take away the watch that watch_job() added again meanwhile."""
    for job_id in (41, 42, 43):
        synthetic_spool.job_dir(job_id).mkdir(parents=True)
    inotify = GatedINotify()
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root,
                           inotify_factory=lambda: inotify)
    started = watcher.start()
    assert started is not None
    last, job, busy = sorted(started.touched, key=lambda j: j.name)
    assert job.name == "hash.2/job.42"
    assert watcher.watch_job(busy) and watcher.watch_job(job) and watcher.watch_job(last)
    watcher.release(busy)  # the removal thread now waits at the gate with this one
    watcher.release(job)  # queued behind it
    assert watcher.watch_job(job)
    watcher.release(last)  # removals run in order: once this one is done, job's was due
    inotify.gate.set()
    wait_until(lambda: len(inotify.removed) == 2, 5, "the two queued removals ran",
               interval=0.01)
    synthetic_spool.write_file(synthetic_spool.job_dir(42) / "script", b"x\0")
    changes = read_until(watcher, lambda c: c.touched)
    assert changes.touched == [job]
    watcher.close()


def test_removed_job_directory_is_reported_gone(synthetic_spool: Any) -> None:
    directory = synthetic_spool.write_job(8, b"#!/bin/sh\n")
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root)
    assert watcher.start() is not None
    shutil.rmtree(directory)
    changes = read_until(watcher, lambda c: c.gone)
    assert names(changes.gone) == {"hash.8/job.8"}
    watcher.close()


def test_overflow_triggers_a_full_rescan_that_finds_jobs_whose_events_were_lost(
        synthetic_spool: Any, scripted_inotify: Any) -> None:
    inotify = scripted_inotify()
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root,
                           inotify_factory=lambda: inotify)
    assert watcher.start() is not None
    inotify.drop_events()
    for job_id in range(100, 130):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n")
    assert inotify.queued()  # the kernel queued the writes' events (within the syscalls) ...
    assert watcher.read().touched == []  # ... and they are lost
    inotify.overflow()
    changes = watcher.read()
    assert changes.overflow and changes.full_scan
    assert names(changes.touched) == {f"hash.{n % 10}/job.{n}" for n in range(100, 130)}
    watcher.close()


def test_symlink_planted_as_a_hash_dir_is_rejected_not_followed(
        synthetic_spool: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "job.1").mkdir(parents=True)
    (synthetic_spool.root / "hash.1").symlink_to(elsewhere)
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root)
    changes = watcher.start()
    assert changes is not None
    assert changes.touched == []
    assert [(r.path.name, r.reason) for r in changes.rejected] == [("hash.1", "symlink")]
    watcher.close()


def test_spool_directory_removed_is_reported_lost(synthetic_spool: Any) -> None:
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root)
    assert watcher.start() is not None
    shutil.rmtree(synthetic_spool.root)
    changes = read_until(watcher, lambda c: c.spool_lost)
    assert changes.spool_lost and not watcher.started


def test_watch_limit_on_a_job_dir_returns_false_and_on_a_hash_dir_degrades(
        synthetic_spool: Any, scripted_inotify: Any) -> None:
    inotify = scripted_inotify()
    synthetic_spool.write_job(3, b"#!/bin/sh\n")
    inotify.refuse_watches_under = synthetic_spool.job_dir(3)
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root,
                           inotify_factory=lambda: inotify)
    started = watcher.start()
    assert started is not None and not watcher.degraded
    [job] = started.touched
    assert watcher.watch_job(job) is False
    inotify.refuse_watches_under = synthetic_spool.root / "hash.4"
    synthetic_spool.write_job(4, b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: c.watch_failures)
    assert watcher.degraded and changes.watch_failures == 1
    inotify.refuse_watches_under = None
    rescan = watcher.rescan()
    assert names(rescan.touched) == {"hash.3/job.3", "hash.4/job.4"}
    assert not watcher.degraded
    watcher.close()


def test_torque_jobs_dir_yields_one_job_per_base_and_its_subdirectories(
        tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    shutil.copytree(TORQUE_FIXTURE, jobs_dir)
    watcher = SpoolWatcher(Scheduler.TORQUE, jobs_dir, torque_subdirs=True)
    changes = watcher.start()
    assert changes is not None
    found = {job.name: job for job in changes.touched}
    assert set(found) == {"4711.torque01.cluster.example", "4712.torque01.cluster.example",
                          "4713[].torque01.cluster.example", "4/4714.torque01.cluster.example"}
    assert found["4/4714.torque01.cluster.example"].identity_file.exists()
    (jobs_dir / "4711.torque01.cluster.example.JB").write_bytes(b"rewritten")
    (jobs_dir / "7").mkdir()
    (jobs_dir / "7" / "4717.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: len(names(c.touched)) >= 2)
    assert names(changes.touched) == {"4711.torque01.cluster.example",
                                      "7/4717.torque01.cluster.example"}
    (jobs_dir / "4711.torque01.cluster.example.JB").unlink()
    (jobs_dir / "4711.torque01.cluster.example.SC").unlink()
    changes = read_until(watcher, lambda c: c.gone)
    assert names(changes.gone) == {"4711.torque01.cluster.example"}, "gone with its script"
    watcher.close()


def test_hash_dir_refused_at_creation_is_retried_and_scanned_once_watched(
        synthetic_spool: Any, scripted_inotify: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Permission denied on a new hash.N (created 0700, opened up a moment later): the watch
    is retried, and once added the directory is listed, so its job is not missed."""
    inotify = scripted_inotify()
    inotify.refusal = errno.EACCES
    inotify.refuse_watches_under = synthetic_spool.root / "hash.4"
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root,
                           inotify_factory=lambda: inotify)
    assert watcher.start() is not None
    synthetic_spool.write_job(4, b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: c.watch_failures)
    assert changes.watch_failures == 1 and watcher.degraded and changes.touched == []
    still_refused = watcher.retry_watches()
    assert still_refused.watch_failures == 1 and still_refused.touched == []
    assert watcher.degraded
    assert sum("cannot watch" in r.getMessage() for r in caplog.records) == 1, "logged once"
    inotify.refuse_watches_under = None
    retried = watcher.retry_watches()
    assert names(retried.touched) == {"hash.4/job.4"} and retried.watch_failures == 0
    assert not watcher.degraded
    synthetic_spool.write_job(14, b"#!/bin/sh\n")  # now followed by its events
    assert names(read_until(watcher, lambda c: c.touched).touched) == {"hash.4/job.14"}
    watcher.close()


def test_refused_hash_dir_that_is_removed_meanwhile_is_no_longer_retried(
        synthetic_spool: Any, scripted_inotify: Any) -> None:
    inotify = scripted_inotify()
    inotify.refusal = errno.EACCES
    inotify.refuse_watches_under = synthetic_spool.root / "hash.6"
    synthetic_spool.write_job(6, b"#!/bin/sh\n")
    watcher = SpoolWatcher(Scheduler.SLURM, synthetic_spool.root,
                           inotify_factory=lambda: inotify)
    started = watcher.start()
    assert started is not None and started.watch_failures == 1 and watcher.degraded
    shutil.rmtree(synthetic_spool.root / "hash.6")
    inotify.refuse_watches_under = None
    assert watcher.retry_watches().watch_failures == 0
    assert not watcher.degraded
    watcher.close()


def test_torque_digit_subdirs_holding_jobs_are_followed_without_the_setting_and_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs_dir = tmp_path / "jobs"
    shutil.copytree(TORQUE_FIXTURE, jobs_dir)  # holds 4/4714.torque01.cluster.example.*
    watcher = SpoolWatcher(Scheduler.TORQUE, jobs_dir, torque_subdirs=False)
    with caplog.at_level(logging.WARNING, logger="producer.watcher"):
        changes = watcher.start()
    assert changes is not None
    assert "4/4714.torque01.cluster.example" in names(changes.touched)
    [warning] = [r.getMessage() for r in caplog.records if "torque-subdirs" in r.getMessage()]
    assert "subdirectories 4 " in warning and "following them" in warning
    (jobs_dir / "7").mkdir()  # a subdirectory created later is followed too
    (jobs_dir / "7" / "4717.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: c.touched)
    assert names(changes.touched) == {"7/4717.torque01.cluster.example"}
    watcher.close()


def test_torque_digit_subdirs_without_job_files_are_not_followed_and_not_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    (jobs_dir / "3").mkdir()
    (jobs_dir / "3" / "notes.txt").write_bytes(b"not a job file")
    (jobs_dir / "4711.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n")
    watcher = SpoolWatcher(Scheduler.TORQUE, jobs_dir, torque_subdirs=False)
    with caplog.at_level(logging.WARNING, logger="producer.watcher"):
        changes = watcher.start()
    assert changes is not None and names(changes.touched) == {"4711.torque01.cluster.example"}
    assert not watcher.follow_torque_subdirs
    assert not [r for r in caplog.records if "torque-subdirs" in r.getMessage()]
    (jobs_dir / "3" / "4713.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n")
    (jobs_dir / "4712.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n")
    changes = read_until(watcher, lambda c: c.touched)
    assert names(changes.touched) == {"4712.torque01.cluster.example"}
    watcher.close()
