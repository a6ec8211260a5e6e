"""Reading jobs: every outcome is a value, and reader processes answer as inline reading does,
lose nothing when they die, and never outlive the service."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from producer.environment import DEFAULT_REDACT, EnvPolicy
from producer.errors import (
    REASON_INCOMPLETE,
    REASON_MALFORMED,
    REASON_NOT_A_JOB,
    REASON_READER_LOST,
)
from producer.events import EventSettings
from producer.jobs import JobRef
from producer.read_outcomes import ReadEvent, ReadFailure, ReadFailureKind, ReadOutcome, read_job
from producer.reader_processes import QUEUED_JOBS, JobReaders
from schemas.codec import JobEventCodec
from schemas.model import JobEvent, Scheduler
from testkit.waiting import wait_until

SETTINGS = EventSettings(cluster="hydra", env_policy=EnvPolicy(None, re.compile(DEFAULT_REDACT)),
                         max_script_bytes=64, host="master01", version="1.2.3")
CODEC = JobEventCodec()


def slurm_ref(spool: Any, job_id: int) -> JobRef:
    return JobRef(Scheduler.SLURM, f"hash.{job_id % 10}/job.{job_id}", spool.job_dir(job_id))


def without_read_time(event: JobEvent) -> JobEvent:
    return dataclasses.replace(event, read_time=0)


def test_a_complete_job_becomes_its_encoded_event_with_what_the_service_logs(
        synthetic_spool: Any) -> None:
    synthetic_spool.write_job(7, b"#!/bin/sh\n" + b"x" * 100,
                              (b"USER=alice", b"API_TOKEN=s3cret"))
    outcome = read_job(slurm_ref(synthetic_spool, 7), SETTINGS, CODEC, 1234)
    assert isinstance(outcome, ReadEvent)
    event = CODEC.decode(outcome.value)
    assert (event.job_id, event.read_time, outcome.meta.job_key) == ("7", 1234, event.job_key)
    assert outcome.meta.spool_name == "hash.7/job.7"
    assert outcome.redacted_values == 1
    assert outcome.truncated is not None and outcome.truncated.size == 110
    assert outcome.truncated.carried == 64


def test_a_job_still_being_written_is_incomplete(synthetic_spool: Any) -> None:
    directory = synthetic_spool.job_dir(8)
    directory.mkdir(parents=True)
    synthetic_spool.write_file(directory / "environment", synthetic_spool.environment_bytes([]))
    synthetic_spool.write_file(directory / "script", b"#!/bin/sh\n")  # no NUL yet
    outcome = read_job(slurm_ref(synthetic_spool, 8), SETTINGS, CODEC, 0)
    assert outcome == ReadFailure(ReadFailureKind.INCOMPLETE, REASON_INCOMPLETE,
                                  "script is not NUL-terminated yet")


def test_a_directory_that_is_no_job_fails_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "job.x").mkdir()
    outcome = read_job(JobRef(Scheduler.SLURM, "job.x", tmp_path / "job.x"), SETTINGS, CODEC, 0)
    assert isinstance(outcome, ReadFailure)
    assert (outcome.kind, outcome.reason) == (ReadFailureKind.FAILED, REASON_NOT_A_JOB)


class BrokenCodec(JobEventCodec):
    def encode(self, event: JobEvent) -> bytes:
        raise RuntimeError("a bug in encoding")


def test_an_unexpected_error_is_a_failure_carrying_its_traceback(synthetic_spool: Any) -> None:
    synthetic_spool.write_job(9, b"#!/bin/sh\n")
    outcome = read_job(slurm_ref(synthetic_spool, 9), SETTINGS, BrokenCodec(), 0)
    assert isinstance(outcome, ReadFailure)
    assert (outcome.kind, outcome.reason) == (ReadFailureKind.UNEXPECTED, REASON_MALFORMED)
    assert "Traceback" in outcome.detail and "RuntimeError: a bug in encoding" in outcome.detail


# --------------------------------------------------------------------------- JobReaders


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def restarts(registry: CollectorRegistry) -> Counter:
    return Counter("reader_restarts", "test", registry=registry)


@pytest.fixture
def readers(restarts: Counter) -> Iterator[JobReaders]:
    pool = JobReaders(SETTINGS, 1, restarts)
    pool.start()
    yield pool
    pool.close()


def collect(readers: JobReaders, expected: int,
            timeout: float = 30) -> list[tuple[JobRef, ReadOutcome]]:
    outcomes: list[tuple[JobRef, ReadOutcome]] = []

    def all_answered() -> bool:
        outcomes.extend(readers.results())
        return len(outcomes) >= expected

    wait_until(all_answered, timeout, f"{expected} answers", interval=0.01,
               context=lambda: f"{len(outcomes)} answered")
    assert readers.in_flight == 0
    return outcomes


def reader_pids() -> set[int]:
    """Children of this process that are multiprocessing spawn children (a child shows once
    it has exec'd the interpreter: until then its command line is this process's)."""
    children: set[int] = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        text = Path(f"/proc/{os.getpid()}/task/{task}/children").read_text()
        children.update(int(pid) for pid in text.split())
    return {pid for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def kill_and_wait(pid: int) -> None:
    """SIGKILL a reader and wait until it is dead (a zombie, until its parent reaps it)."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
               10, f"reader {pid} is dead", interval=0.01)


def test_a_reader_process_answers_exactly_as_reading_inline(
        synthetic_spool: Any, readers: JobReaders, restarts: Counter) -> None:
    jobs = []
    for job_id in range(1, 41):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\necho %d\n" % job_id)
        jobs.append(slurm_ref(synthetic_spool, job_id))
    readers.submit(jobs)
    assert readers.in_flight == 40
    answered = dict(collect(readers, 40))
    inline = JobReaders(SETTINGS, 0, restarts)
    inline.submit(jobs)
    assert inline.in_flight == 0
    for job, expected in inline.results():
        got = answered[job]
        assert isinstance(got, ReadEvent) and isinstance(expected, ReadEvent)
        assert got.meta == expected.meta
        assert without_read_time(CODEC.decode(got.value)) == without_read_time(
            CODEC.decode(expected.value))


def test_a_dead_reader_loses_no_job_its_jobs_come_back_and_a_new_reader_takes_over(
        synthetic_spool: Any, readers: JobReaders, registry: CollectorRegistry) -> None:
    for job_id in range(1, 4):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n")
    first = slurm_ref(synthetic_spool, 1)
    readers.submit([first])
    collect(readers, 1)
    (pid,) = reader_pids()
    kill_and_wait(pid)
    lost = [slurm_ref(synthetic_spool, 2), slurm_ref(synthetic_spool, 3)]
    readers.submit(lost)
    outcomes = collect(readers, 2)
    assert {job for job, _ in outcomes} == set(lost)
    assert all(isinstance(o, ReadFailure) and o.kind is ReadFailureKind.READER_LOST
               and o.reason == REASON_READER_LOST for _, o in outcomes)
    assert registry.get_sample_value("reader_restarts_total") == 1
    readers.submit(lost)
    assert all(isinstance(o, ReadEvent) for _, o in collect(readers, 2))
    assert reader_pids() and pid not in reader_pids()


def test_a_reader_that_dies_idle_is_replaced_at_the_next_look(
        synthetic_spool: Any, readers: JobReaders, registry: CollectorRegistry) -> None:
    synthetic_spool.write_job(1, b"#!/bin/sh\n")
    readers.submit([slurm_ref(synthetic_spool, 1)])
    collect(readers, 1)
    (pid,) = reader_pids()
    kill_and_wait(pid)
    assert readers.results() == [] and readers.in_flight == 0
    assert registry.get_sample_value("reader_restarts_total") == 1
    # That look started the new reader; it shows in reader_pids() once it has exec'd.
    wait_until(lambda: len(reader_pids()) == 1, 10, "one reader process", interval=0.01,
               context=lambda: f"readers: {reader_pids()}")
    assert pid not in reader_pids()
    readers.submit([slurm_ref(synthetic_spool, 1)])
    assert isinstance(collect(readers, 1)[0][1], ReadEvent)


def test_reader_processes_ignore_the_stop_signals_the_service_handles(
        synthetic_spool: Any, readers: JobReaders) -> None:
    synthetic_spool.write_job(1, b"#!/bin/sh\n")
    readers.submit([slurm_ref(synthetic_spool, 1)])
    collect(readers, 1)
    (pid,) = reader_pids()
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    # No wait needed: both signals are pending (or, ignored, discarded) before the job is
    # sent, so the reader meets them before it reads the job. Had they stopped it, the job
    # would come back as lost and another reader would be running.
    readers.submit([slurm_ref(synthetic_spool, 1)])
    assert isinstance(collect(readers, 1)[0][1], ReadEvent)
    assert reader_pids() == {pid}


def test_close_stops_the_reader_processes(synthetic_spool: Any, restarts: Counter) -> None:
    pool = JobReaders(SETTINGS, 1, restarts)
    synthetic_spool.write_job(1, b"#!/bin/sh\n")
    pool.submit([slurm_ref(synthetic_spool, 1)])
    collect(pool, 1)
    assert reader_pids()
    pool.close()
    assert not reader_pids()


def test_the_loop_never_blocks_handing_jobs_to_a_reader_that_does_not_read(
        synthetic_spool: Any, readers: JobReaders) -> None:
    """A stopped reader cannot drain its requests: everything within capacity() must still
    be handed over at once (a blocked loop could never read the answers that would free
    the reader: a deadlock), and nothing beyond it is taken."""
    synthetic_spool.write_job(1, b"#!/bin/sh\n")
    readers.submit([slurm_ref(synthetic_spool, 1)])
    collect(readers, 1)
    (pid,) = reader_pids()
    job = slurm_ref(synthetic_spool, 1)
    os.kill(pid, signal.SIGSTOP)
    handed = 0
    try:
        started = time.monotonic()
        # A busy loop hands jobs over one or two at a time: every request counts, not only
        # every job (hundreds of one-job requests once filled the pipe and hung the loop).
        while readers.capacity():
            take = min(readers.capacity(), 1 if handed < 5 else 100)
            readers.submit([job] * take)
            handed += take
        assert time.monotonic() - started < 1.0
        with pytest.raises(ValueError, match="room for 0"):
            readers.submit([job])
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(collect(readers, handed)) == handed


def test_a_reader_holds_as_many_jobs_handed_over_one_by_one_as_in_full_chunks(
        synthetic_spool: Any, readers: JobReaders) -> None:
    """At a steady few hundred jobs/s the loop hands jobs over one at a time: the reader's
    room is counted in jobs, so it still gathers up to QUEUED_JOBS of them for one turn
    (one squeue); counted in chunks it took eight jobs a turn and fell behind."""
    synthetic_spool.write_job(1, b"#!/bin/sh\n")
    job = slurm_ref(synthetic_spool, 1)
    readers.submit([job])
    collect(readers, 1)  # the reader is up (its command line shows it)
    (pid,) = reader_pids()
    os.kill(pid, signal.SIGSTOP)  # nothing is answered, so nothing frees room meanwhile
    try:
        for handed in range(QUEUED_JOBS):
            assert readers.capacity() == QUEUED_JOBS - handed
            readers.submit([job])
        assert readers.capacity() == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(collect(readers, QUEUED_JOBS)) == QUEUED_JOBS
