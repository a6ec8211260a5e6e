"""Bad input in the spool, each case on its own: a clear error with the job id, a count by
reason, and every other job still delivered.

The spool is synthetic, written by the test exactly the way slurmctld writes one (see
tests/conftest.py), because these tests are about the producer's handling of what it finds;
the producer is the real subprocess and the broker the real Kafka.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

OTHER_USER = 12345
# Root without the capabilities that bypass file permissions: reads like any other user.
WITHOUT_DAC_OVERRIDE = ("setpriv", "--inh-caps=-all",
                        "--bounding-set=-dac_override,-dac_read_search")
FAILED = "sarchive_producer_jobs_failed_total"
GOOD_ENV = (b"USER=alice", b"HOME=/home/alice", b"PWD=/home/alice/run")


@dataclass(frozen=True)
class SpoolRig:
    spool: Any  # tests/conftest.py SyntheticSlurmSpool
    bootstrap: str
    topic: str
    state_dir: Path
    runner: Callable[..., Any]
    reader: Callable[..., Any]

    def start(self, *extra: str, spool: Path | None = None,
              wrapper: tuple[str, ...] = ()) -> Any:
        return self.runner("--cluster", "synthetic", "--spool", str(spool or self.spool.root),
                           "--state-dir", str(self.state_dir), "--brokers", self.bootstrap,
                           "--topic", self.topic, *extra, wrapper=wrapper)

    def delivered(self, *job_ids: str, timeout: float = 60) -> dict[str, Any]:
        reader = self.reader(self.bootstrap, self.topic).read_until(
            lambda r: set(job_ids) <= r.job_ids(), timeout=timeout)
        assert set(job_ids) <= reader.job_ids(), f"not delivered: {set(job_ids) - reader.job_ids()}"
        return {e.job_id: e for e in reader.events}


@pytest.fixture
def rig(synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> SpoolRig:
    return SpoolRig(synthetic_spool, kafka_bootstrap, kafka_topic, tmp_path / "state",
                    producer_runner, topic_reader)


def assert_failed(producer: Any, job_label: str, reason: str, count: float = 1) -> None:
    producer.wait_for_metric(FAILED, lambda v: v >= count, labels={"reason": reason})
    producer.wait_for_log(f"job {job_label} (")
    lines = [line for line in producer.log().splitlines() if f"job {job_label} (" in line]
    assert any(f"not archived: {reason}" in line for line in lines), lines


def script(text: str) -> bytes:
    return f"#!/bin/bash\n#SBATCH --job-name={text}\necho {text}\n".encode()


def test_unreadable_job_files_are_counted_and_logged_and_other_jobs_delivered(
        rig: SpoolRig) -> None:
    rig.spool.write_job(101, script("readable"), GOOD_ENV)
    unreadable = rig.spool.write_job(102, script("unreadable"), GOOD_ENV)
    os.chown(unreadable / "script", OTHER_USER, OTHER_USER)  # mode 0700: not ours to read
    producer = rig.start(wrapper=WITHOUT_DAC_OVERRIDE)
    rig.delivered("101")
    assert_failed(producer, "102", "permission")
    assert "102" not in rig.delivered("101")


def test_job_directory_vanishing_before_its_files_are_complete_is_counted_as_vanished(
        rig: SpoolRig) -> None:
    producer = rig.start()
    producer.wait_for_log("watching slurm spool")
    directory = rig.spool.job_dir(201)
    directory.mkdir(parents=True)
    rig.spool.write_file(directory / "environment", rig.spool.environment_bytes(GOOD_ENV))
    producer.wait_for_metric("sarchive_producer_pending_jobs", lambda v: v >= 1)
    shutil.rmtree(directory)
    rig.spool.write_job(202, script("after"), GOOD_ENV)
    assert "201" not in rig.delivered("202")
    assert_failed(producer, "201", "vanished")


def test_half_written_environment_is_waited_for_and_counted_incomplete_past_the_bound(
        rig: SpoolRig) -> None:
    half = rig.spool.environment_bytes(GOOD_ENV)[:-len(GOOD_ENV[-1]) - 1]  # 2 of 3 entries
    completed_later = rig.spool.job_dir(301)
    never_completed = rig.spool.job_dir(302)
    for directory in (completed_later, never_completed):
        directory.mkdir(parents=True)
        rig.spool.write_file(directory / "environment", half)
        rig.spool.write_file(directory / "script", script("half") + b"\0")
    producer = rig.start("--ready-timeout", "4")
    producer.wait_for_metric("sarchive_producer_pending_jobs", lambda v: v == 2)
    time.sleep(1)  # the behaviour under test: incomplete for a while, within the bound
    rig.spool.write_file(completed_later / "environment", rig.spool.environment_bytes(GOOD_ENV))
    events = rig.delivered("301")
    assert events["301"].environment == b"".join(e + b"\0" for e in GOOD_ENV)
    assert_failed(producer, "302", "incomplete")
    assert "still incomplete after 4 s" in producer.log()
    assert producer.metric("sarchive_producer_pending_jobs") == 0


def test_garbage_bytes_are_refused_as_malformed_or_carried_byte_exact_in_a_script(
        rig: SpoolRig) -> None:
    garbage_environment = rig.spool.job_dir(401)
    garbage_environment.mkdir(parents=True)
    rig.spool.write_file(garbage_environment / "environment",
                         b"\xff\xff\xff\xff" + os.urandom(4000))
    rig.spool.write_file(garbage_environment / "script", script("garbage-env") + b"\0")
    binary = bytes(range(1, 256)) * 40  # everything but NUL, which sbatch refuses
    rig.spool.write_job(402, binary, GOOD_ENV)
    producer = rig.start()
    events = rig.delivered("402")
    assert events["402"].script == binary
    assert_failed(producer, "401", "malformed")


def test_5_mb_script_is_sent_truncated_flagged_with_its_size_and_full_sha256(
        rig: SpoolRig) -> None:
    line = b"echo 'a line of a generated 5 MB job script, \xe9 included'\n"
    big = b"#!/bin/bash\n" + line * (5_000_000 // len(line))
    rig.spool.write_job(501, big, GOOD_ENV)
    producer = rig.start()
    event = rig.delivered("501")["501"]
    assert event.script_truncated
    assert event.script == big[:4 * 1024 * 1024]
    assert event.script_size == len(big) > 4_900_000
    assert event.script_sha256 == hashlib.sha256(big).hexdigest()
    producer.wait_for_log("job 501: script of")
    assert producer.metric("sarchive_producer_scripts_truncated_total") == 1


def test_job_directory_with_a_non_numeric_id_is_counted_as_not_a_job(rig: SpoolRig) -> None:
    bogus = rig.spool.root / "hash.1" / "job.abc"
    bogus.mkdir(parents=True)
    rig.spool.write_file(bogus / "environment", rig.spool.environment_bytes(GOOD_ENV))
    rig.spool.write_file(bogus / "script", script("bogus") + b"\0")
    rig.spool.write_job(601, script("fine"), GOOD_ENV)
    producer = rig.start()
    assert set(rig.delivered("601")) == {"601"}
    assert_failed(producer, "abc", "not-a-job")


def test_symlinks_planted_in_the_spool_are_refused_not_followed(
        rig: SpoolRig, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    target = elsewhere / "job.702"
    target.mkdir(parents=True)
    rig.spool.write_file(target / "environment", rig.spool.environment_bytes(GOOD_ENV))
    rig.spool.write_file(target / "script", script("planted") + b"\0")
    (rig.spool.root / "hash.2").mkdir()
    (rig.spool.root / "hash.2" / "job.702").symlink_to(target)  # a symlinked job directory
    linked_file = rig.spool.write_job(703, script("x"), GOOD_ENV)
    (linked_file / "script").unlink()
    (linked_file / "script").symlink_to("/etc/passwd")  # a symlinked script
    (rig.spool.root / "hash.5").symlink_to(elsewhere)  # a symlinked hash directory
    rig.spool.write_job(704, script("fine"), GOOD_ENV)
    producer = rig.start()
    assert set(rig.delivered("704")) == {"704"}
    assert_failed(producer, "702", "symlink")
    assert_failed(producer, "703", "symlink", count=2)
    producer.wait_for_metric(FAILED, lambda v: v == 3, labels={"reason": "symlink"})
    assert "hash.5 in the spool: symlink" in producer.log()
    assert stat.S_ISLNK(os.lstat(linked_file / "script").st_mode), "the spool was not touched"


def test_spool_missing_at_start_is_waited_for_then_watched(rig: SpoolRig) -> None:
    spool = rig.spool.root / "created-later"
    producer = rig.start(spool=spool)
    producer.wait_for_log("does not exist (yet): waiting for it")
    time.sleep(1.5)  # the behaviour under test: time passes (several polls) with no spool
    assert producer.alive(), "the producer gave up on a missing spool"
    spool.mkdir()
    rig.spool.root = spool
    rig.spool.write_job(801, script("late"), GOOD_ENV)
    rig.delivered("801")
    assert producer.log().count("does not exist (yet)") == 1, "logged once, not per poll"


def test_hash_dir_refused_when_it_appears_is_watched_once_opened_up_and_its_job_delivered(
        rig: SpoolRig, tmp_path: Path) -> None:
    """A hash.N that appears 0700 and another user's, then is opened up (the real kernel
    refuses the watch: the producer runs as root without the capabilities that bypass
    permissions), is retried and listed once watched: its job is not missed."""
    producer = rig.start(wrapper=WITHOUT_DAC_OVERRIDE)
    producer.wait_for_log("watching slurm spool")
    staging = type(rig.spool)(tmp_path / "staging")
    staging.write_job(33, script("late-opened"), GOOD_ENV)  # staging/hash.3/job.33
    hash_dir = staging.root / "hash.3"
    os.chown(hash_dir, OTHER_USER, OTHER_USER)
    hash_dir.chmod(0o700)
    hash_dir.rename(rig.spool.root / "hash.3")  # appears at once with its final mode
    producer.wait_for_metric("sarchive_producer_watch_failures_total", lambda v: v >= 1,
                             labels={"level": "directory"})
    assert "hash.3: Permission denied; retrying" in producer.log()
    (rig.spool.root / "hash.3").chmod(0o755)
    rig.delivered("33")
    producer.wait_for_log("watching " + str(rig.spool.root / "hash.3") + " now")
