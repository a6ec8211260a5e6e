"""A Slurm job's owner comes from slurmctld (squeue, batched, cached), never from the
submitter's environment; what squeue cannot establish is UNKNOWN."""

from __future__ import annotations

import logging
import os
import pwd
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from producer.environment import DEFAULT_REDACT, EnvPolicy, render_slurm_environment_file
from producer.events import EventSettings, build_job_event
from producer.jobs import JobRef
from producer.read_outcomes import ReadEvent, read_job
from producer.reader_processes import JobReaders
from producer.slurm_owners import (
    UNKNOWN_OWNER,
    JobOwner,
    OwnerQueryError,
    OwnerQuerySettings,
    SlurmOwners,
    parse_squeue_uids,
    run_squeue,
    squeue_command,
)
from producer.spool_io import RawJob
from schemas.codec import JobEventCodec
from schemas.model import OwnerSource, Scheduler, SpoolFile, UserSource
from testkit.waiting import wait_until

SETTINGS = EventSettings(cluster="hydra", env_policy=EnvPolicy(None, re.compile(DEFAULT_REDACT)),
                         max_script_bytes=1 << 20, host="master01", version="1.2.3")
CODEC = JobEventCodec()
NAMES = {1000: "alice", 1001: "carol"}


class RecordedSqueue:
    """Answers as squeue would for the jobs it holds, and records every call."""

    def __init__(self, uids: dict[str, int]) -> None:
        self.uids = uids
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str], timeout: float) -> str:
        self.calls.append(list(command))
        asked = command[-1].removeprefix("--jobs=").split(",")
        return "".join(f"{job_id}|{self.uids[job_id]}\n" for job_id in asked
                       if job_id in self.uids)


def owners_with(squeue: RecordedSqueue) -> SlurmOwners:
    return SlurmOwners(OwnerQuerySettings(), squeue, NAMES.get)


def test_squeue_is_asked_for_every_state_user_and_partition_by_array_id_and_uid() -> None:
    assert squeue_command("/usr/bin/squeue", ["4711", "4712"]) == [
        "/usr/bin/squeue", "--noheader", "--all", "--states=all", "--format=%F|%U",
        "--jobs=4711,4712"]


def test_squeue_lines_give_each_job_its_uid_an_array_once() -> None:
    assert parse_squeue_uids("4711|1000\n4712|0\n4712|0\n\n") == {"4711": 1000, "4712": 0}


@pytest.mark.parametrize("line", ["4711", "4711|bob", "4711_[1-3]|1000", "|1000"])
def test_squeue_output_not_understood_establishes_nobody(line: str) -> None:
    with pytest.raises(OwnerQueryError):
        parse_squeue_uids(line + "\n")


def test_one_squeue_answers_a_whole_batch_and_a_job_is_never_asked_twice() -> None:
    squeue = RecordedSqueue({"1": 1000, "2": 1001, "3": 1000})
    owners = owners_with(squeue)
    assert owners.owners(["1", "2", "3", "2"]) == {
        "1": JobOwner("alice", 1000, OwnerSource.SCHEDULER),
        "2": JobOwner("carol", 1001, OwnerSource.SCHEDULER),
        "3": JobOwner("alice", 1000, OwnerSource.SCHEDULER)}
    assert owners.owners(["3", "1"])["3"].name == "alice"
    assert len(squeue.calls) == 1
    assert squeue.calls[0][-1] == "--jobs=1,2,3"


def test_a_job_gone_from_slurmctld_is_unknown_and_asked_again_next_time() -> None:
    squeue = RecordedSqueue({"1": 1000})
    owners = owners_with(squeue)
    assert owners.owners(["1", "9"])["9"] == UNKNOWN_OWNER
    assert owners.owners(["9"])["9"] == UNKNOWN_OWNER
    assert [call[-1] for call in squeue.calls] == ["--jobs=1,9", "--jobs=9"]


def test_a_uid_nss_does_not_know_keeps_its_uid_and_names_nobody() -> None:
    owners = owners_with(RecordedSqueue({"1": 4242}))
    assert owners.owners(["1"])["1"] == JobOwner(None, 4242, OwnerSource.SCHEDULER)


def test_a_failed_squeue_leaves_the_whole_batch_unknown_and_is_counted() -> None:
    def failing(command: Sequence[str], timeout: float) -> str:
        raise OwnerQueryError("slurmctld unreachable")

    owners = SlurmOwners(OwnerQuerySettings(), failing, NAMES.get)
    assert set(owners.owners(["1", "2"]).values()) == {UNKNOWN_OWNER}
    assert (owners.queries, owners.failures) == (1, 1)


def executable(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_run_squeue_reads_stdout_and_takes_a_single_unknown_id_as_no_answer(
        tmp_path: Path) -> None:
    answering = executable(tmp_path / "answers", 'echo "4711|1000"\n')
    assert run_squeue([answering], 5) == "4711|1000\n"
    unknown = executable(tmp_path / "unknown", "echo 'slurm_load_jobs error: Invalid job id"
                         " specified' >&2\nexit 1\n")
    assert run_squeue([unknown], 5) == ""


def test_run_squeue_failing_timing_out_or_missing_is_an_owner_query_error(
        tmp_path: Path) -> None:
    failing = executable(tmp_path / "fails", "echo 'Unable to contact slurm controller' >&2\n"
                         "exit 1\n")
    with pytest.raises(OwnerQueryError, match="Unable to contact"):
        run_squeue([failing], 5)
    slow = executable(tmp_path / "slow", "exec sleep 10\n")
    with pytest.raises(OwnerQueryError, match="did not answer"):
        run_squeue([slow], 0.2)
    with pytest.raises(OwnerQueryError, match="could not run"):
        run_squeue([str(tmp_path / "absent")], 5)


def spoofed_job(job_id: str) -> RawJob:
    return RawJob(Scheduler.SLURM, job_id, 1_700_000_000_000, (
        SpoolFile("script", b"#!/bin/sh\ntrue\n\0"),
        SpoolFile("environment", render_slurm_environment_file(
            [b"USER=bob", b"LOGNAME=bob", b"SLURM_SUBMIT_DIR=/home/bob"])),
    ))


def test_a_spoofed_user_stays_a_claim_and_the_owner_is_the_schedulers() -> None:
    event = build_job_event(spoofed_job("4711"), SETTINGS, 1,
                        JobOwner("alice", 1000, OwnerSource.SCHEDULER)).event
    assert (event.user, event.user_source) == ("bob", UserSource.USER)
    assert (event.owner, event.owner_uid, event.owner_source) == (
        "alice", 1000, OwnerSource.SCHEDULER)


def test_a_slurm_job_without_a_scheduler_owner_is_unknown_never_the_claim() -> None:
    event = build_job_event(spoofed_job("4711"), SETTINGS, 1).event
    assert event.user == "bob"
    assert (event.owner, event.owner_uid, event.owner_source) == (
        None, None, OwnerSource.UNKNOWN)


def fake_squeue(tmp_path: Path) -> str:
    """A squeue that logs each call and says every job asked belongs to this test's uid."""
    log = tmp_path / "calls"
    return executable(tmp_path / "squeue", f'echo "$@" >> {log}\n'
                      'for id in $(echo "${5#--jobs=}" | tr , " "); do'
                      f' echo "$id|{os.getuid()}"; done\n')


def test_reading_inline_asks_one_squeue_for_the_whole_batch(
        synthetic_spool: Any, tmp_path: Path) -> None:
    jobs = []
    for job_id in range(1, 41):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n", (b"USER=bob",))
        jobs.append(JobRef(Scheduler.SLURM, f"hash.{job_id % 10}/job.{job_id}",
                           synthetic_spool.job_dir(job_id)))
    readers = JobReaders(SETTINGS, 0, Counter("r", "r", registry=CollectorRegistry()),
                         OwnerQuerySettings(fake_squeue(tmp_path)))
    readers.submit(jobs)
    outcomes = readers.results()
    me = pwd.getpwuid(os.getuid()).pw_name
    assert len(outcomes) == 40
    for _, outcome in outcomes:
        assert isinstance(outcome, ReadEvent)
        event = CODEC.decode(outcome.value)
        assert (event.user, event.owner, event.owner_source) == ("bob", me,
                                                                 OwnerSource.SCHEDULER)
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_a_reader_process_asks_owners_per_batch_of_chunks(
        synthetic_spool: Any, tmp_path: Path) -> None:
    jobs = []
    for job_id in range(1, 65):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n", (b"USER=bob",))
        jobs.append(JobRef(Scheduler.SLURM, f"hash.{job_id % 10}/job.{job_id}",
                           synthetic_spool.job_dir(job_id)))
    readers = JobReaders(SETTINGS, 1, Counter("r", "r", registry=CollectorRegistry()),
                         OwnerQuerySettings(fake_squeue(tmp_path)))
    try:
        readers.submit(jobs)
        outcomes: list[Any] = []

        def all_answered() -> bool:
            outcomes.extend(readers.results())
            return len(outcomes) == 64

        wait_until(all_answered, 30, "all 64 jobs answered", interval=0.01)
    finally:
        readers.close()
    for _, outcome in outcomes:
        assert isinstance(outcome, ReadEvent)
        assert CODEC.decode(outcome.value).owner_source is OwnerSource.SCHEDULER
    calls = (tmp_path / "calls").read_text().splitlines()
    assert 1 <= len(calls) <= 4  # 4 chunks of 16 jobs: at most one squeue each
    assert sum(call.count(",") + 1 for call in calls) == 64


def test_an_event_says_whether_its_owner_was_established_for_the_unknown_owner_count(
        synthetic_spool: Any) -> None:
    synthetic_spool.write_job(7, b"#!/bin/sh\n", (b"USER=bob",))
    job = JobRef(Scheduler.SLURM, "hash.7/job.7", synthetic_spool.job_dir(7))
    unknown = read_job(job, SETTINGS, CODEC, 1)
    known = read_job(job, SETTINGS, CODEC, 1, JobOwner("alice", 1000, OwnerSource.SCHEDULER))
    assert isinstance(unknown, ReadEvent) and isinstance(known, ReadEvent)
    assert (unknown.owner_known, known.owner_known) == (False, True)


def test_a_squeue_that_keeps_failing_is_warned_about_once_per_interval_with_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    def failing(command: Sequence[str], timeout: float) -> str:
        raise OwnerQueryError("Unable to contact slurm controller")

    owners = SlurmOwners(OwnerQuerySettings(), failing, NAMES.get)
    with caplog.at_level(logging.WARNING, logger="producer.slurm_owners"):
        for batch in range(50):
            owners.owners([str(batch)])
    assert owners.failures == 50
    assert [r.getMessage()[:45] for r in caplog.records] == [
        "the owners of 1 Slurm jobs are unknown (admin"]
