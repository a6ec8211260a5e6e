"""sarchive-producer against a real Grid Engine cell (classic spooling) and the real Kafka.

Jobs go in with the real qsub, held (`-h`) so that they stay pending with their files in the
spool, and are deleted at the end. Each job arrives with the script byte for byte as
job_scripts/<id> holds it and the environment `qstat -j ID -xml` reports, under the default
redaction policy; a job deleted right after its submission is archived still; a restart catches
up without repeating; a rewritten record is not a new job; a burst arrives once; hidden
variables are masked in the carried record where they lie, whatever other fields spell.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from producer.gridengine_record import parse_job_record
from schemas.model import REDACTED_MARKER
from testkit.deliveries import delivered_once
from testkit.gridengine import QstatJob
from testkit.waiting import wait_until

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.conftest import GridEngineCell

HELD = "-h"
PLAIN = b"#!/bin/sh\n#$ -N plain_job\n#$ -l h_rt=0:05:00\necho hello from grid engine\n"
NOT_UTF8 = b"#!/bin/sh\n# caf\xe9 \xff\xfe not UTF-8\necho '\xe9t\xe9'\n"
# A megabyte of script: far past one pipe buffer and one read chunk, under --max-script-bytes.
LARGE = b"#!/bin/sh\n" + b"".join(b"# line %07d of a large script\n" % n
                                  for n in range(33_000)) + b"echo done\n"
SECRETS = {"SECRET_TOKEN": "hunter2-token", "DATABASE_URL": "postgres://app:s3cr3t@db/prod",
           "MULTILINE": "first line\nsecond line"}
REDACTED = {b"SECRET_TOKEN": b"<redacted>", b"API_KEY": b"<redacted>",
            b"DATABASE_URL": b"postgres://app:<redacted>@db/prod"}
BURST = 500  # qsub takes ~0.1 s per job with 8 at once against this cell: about a minute


class Submitter:
    """qsub through the fixture, every job held; deletes those still there at the end."""

    def __init__(self, cell: GridEngineCell) -> None:
        self.cell = cell
        self.job_ids: list[int] = []

    def qsub(self, *args: str, script: bytes | None = PLAIN,
             env: dict[str, str] | None = None) -> str:
        job_id = self.cell.qsub(HELD, *args, script=script, env=env)
        self.job_ids.append(job_id)
        return str(job_id)

    def delete_all(self) -> None:
        # qdel of a job that ended or was deleted fails: only those still spooled.
        present = sorted(job_id for job_id in self.job_ids
                         if self.cell.record_path(job_id).exists())
        if present:
            self.cell.qdel(*present)


@pytest.fixture
def submitter(gridengine: GridEngineCell) -> Iterator[Submitter]:
    submitter = Submitter(gridengine)
    yield submitter
    submitter.delete_all()


@dataclass(frozen=True)
class Rig:
    """One test's producer set-up: the real cell, a fresh topic, a state directory."""

    cell: GridEngineCell
    bootstrap: str
    topic: str
    state_dir: Path
    runner: Callable[..., Any]
    reader: Callable[..., Any]

    def start_producer(self, *extra: str, wrapper: tuple[str, ...] = ()) -> Any:
        """The producer finds the spool in the cell's bootstrap file, as on a site."""
        bootstrap_file = (Path(self.cell.env["SGE_ROOT"]) / self.cell.env["SGE_CELL"]
                          / "common" / "bootstrap")
        producer = self.runner(
            "--scheduler", "gridengine", "--gridengine-bootstrap", str(bootstrap_file),
            "--cluster", "ge-test", "--state-dir", str(self.state_dir),
            "--brokers", self.bootstrap, "--topic", self.topic, *extra, wrapper=wrapper)
        producer.wait_for_log("watching gridengine spool")
        return producer

    def read_until(self, job_ids: set[str], timeout: float) -> Any:
        return self.reader(self.bootstrap, self.topic).read_until(
            lambda r: job_ids <= r.job_ids(), timeout=timeout)


@pytest.fixture
def rig(gridengine: GridEngineCell, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> Rig:
    return Rig(gridengine, kafka_bootstrap, kafka_topic, tmp_path / "state", producer_runner,
               topic_reader)


def qstat_environment(cell: GridEngineCell, job_id: str) -> list[bytes]:
    """The job's environment as qstat -j -xml lists it, as KEY=VALUE entries."""
    oracle = QstatJob.parse(cell.qstat_xml(int(job_id)))
    return [(name or b"") + b"=" + (value or b"")
            for name, value in oracle.rows("JB_env_list", "VA_variable", "VA_value")]


def redacted(entries: list[bytes]) -> list[bytes]:
    """What the default policy leaves of these entries (the test's own list of secrets)."""
    result = []
    for entry in entries:
        key = entry.partition(b"=")[0]
        result.append(key + b"=" + REDACTED[key] if key in REDACTED else entry)
    return result


def assert_as_spooled(event: Any, cell: GridEngineCell, script: bytes | None) -> None:
    """The event's script is job_scripts/<id> byte for byte (a binary job's: its command)
    and its environment is qstat's, redacted; the record it carries is the spool's shape."""
    if script is None:
        script = cell.script_path(int(event.job_id)).read_bytes()
    assert event.script == script, event.job_id
    assert event.environment.split(b"\0")[:-1] == redacted(
        qstat_environment(cell, event.job_id)), event.job_id
    assert (event.owner, event.owner_source.value) == ("root", "SPOOL_RECORD")
    assert "record" in {f.name for f in event.spool_files}


def test_every_kind_of_job_arrives_with_the_spools_script_and_qstats_environment(
        rig: Rig, submitter: Submitter) -> None:
    producer = rig.start_producer()
    plain = submitter.qsub()
    export_all = submitter.qsub("-V", env=SECRETS)
    export_named = submitter.qsub("-v", "API_KEY=abc123,A=1", script=PLAIN)
    array = submitter.qsub("-t", "1-50")
    binary = submitter.qsub("-b", "y", "/bin/echo", "hello", "binary world", script=None)
    not_utf8 = submitter.qsub(script=NOT_UTF8)
    large = submitter.qsub(script=LARGE)
    reader = rig.read_until({plain, export_all, export_named, array, binary, not_utf8, large},
                            timeout=60)
    events = delivered_once(reader.events, {plain, export_all, export_named, array, binary,
                                            not_utf8, large})
    for job_id in (plain, export_all, export_named, array, not_utf8, large):
        assert_as_spooled(events[job_id], rig.cell, None)
    assert events[plain].script == PLAIN and events[large].script == LARGE
    assert events[not_utf8].script == NOT_UTF8
    assert_as_spooled(events[binary], rig.cell, b"/bin/echo hello binary world")
    assert (events[array].array_job_id, events[array].array_task_id) == (array, "1-50")
    assert (events[plain].job_name, events[plain].time_limit) == ("plain_job", "0:05:00")
    everything = b"".join(e.environment + b"".join(f.content for f in e.spool_files)
                          for e in events.values())
    assert b"hunter2-token" not in everything and b"s3cr3t" not in everything
    assert b"abc123" not in everything
    assert set(events[export_all].redacted_keys) == {"SECRET_TOKEN", "DATABASE_URL"}
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0


def test_hidden_variables_spelling_other_fields_are_masked_where_they_lie_in_the_record(
        rig: Rig, submitter: Submitter) -> None:
    """qsub -cwd -v A=,sge=,DIR_TOKEN=<the cwd>, A and sge excluded: `\\0A\\0\\0` is also in
    the descriptor, `\\0sge\\0\\0` the default account and the next field, the token (redacted
    by default) the cwd. The record is carried, each entry masked alone, every other field as
    the spool holds it."""
    producer = rig.start_producer("--env-exclude", "^(A|sge)$")
    workdir = str(rig.cell.workdir)
    job_id = submitter.qsub("-cwd", "-v", f"A=,sge=,DIR_TOKEN={workdir}", script=PLAIN)
    spooled = parse_job_record(rig.cell.record_path(int(job_id)).read_bytes())
    assert {(b"A", b""), (b"sge", b""), (b"DIR_TOKEN", workdir.encode())} <= set(
        spooled.environment)
    event = delivered_once(rig.read_until({job_id}, timeout=60).events, {job_id})[job_id]
    record = next(f.content for f in event.spool_files if f.name == "record")
    carried = parse_job_record(record)
    hidden = {(b"A", b""): (REDACTED_MARKER, REDACTED_MARKER),
              (b"sge", b""): (REDACTED_MARKER, REDACTED_MARKER),
              (b"DIR_TOKEN", workdir.encode()): (b"DIR_TOKEN", REDACTED_MARKER)}
    assert carried.environment == tuple(hidden.get(pair, pair) for pair in spooled.environment)
    assert dataclasses.replace(carried, environment=spooled.environment) == spooled
    assert (carried.account, carried.work_dir) == ("sge", workdir)
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0
    assert "without its Grid Engine record" not in producer.log()


def test_an_unprivileged_user_without_capabilities_reads_the_spool(
        rig: Rig, submitter: Submitter) -> None:
    """The qmaster's spool is 0755 directories and 0644 files, its bootstrap 0644: the
    producer needs neither root nor a capability (docs/producer.md's unit drop-in)."""
    nobody = 65534
    # Its own state directory, where that user reaches it (pytest's temporary tree is 0700).
    state_dir = Path(tempfile.mkdtemp(prefix="sarchive-ge-unprivileged-"))
    os.chown(state_dir, nobody, nobody)
    try:
        # Read in the main process: this machine's virtual environment links its interpreter
        # from under /root (0700), which a reader process, spawned anew, cannot execute as
        # another user; an installation in /opt (docs/producer.md) has no such link.
        producer = dataclasses.replace(rig, state_dir=state_dir).start_producer(
            "--read-workers", "0", wrapper=(
                "setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all"))
        job_id = submitter.qsub()
        reader = rig.read_until({job_id}, timeout=30)
        assert_as_spooled(delivered_once(reader.events, {job_id})[job_id], rig.cell, None)
        producer.signal(signal.SIGTERM)
        assert producer.wait(30) == 0
    finally:
        shutil.rmtree(state_dir)


def test_a_job_deleted_right_after_its_submission_is_archived(
        rig: Rig, submitter: Submitter, gridengine: GridEngineCell) -> None:
    """qdel of a pending job removes its files some 0.1 s later: a running producer (its
    reader process up, as the first job proves) has read it by then."""
    producer = rig.start_producer()
    rig.read_until({submitter.qsub()}, timeout=30)
    script = b"#!/bin/sh\n# deleted at once\necho gone\n"
    job_id = submitter.qsub(script=script)
    gridengine.qdel(int(job_id))
    reader = rig.read_until({job_id}, timeout=30)
    [event] = [e for e in reader.events if e.job_id == job_id]
    assert event.script == script
    wait_until(lambda: not gridengine.record_path(int(job_id)).exists(), 30,
               f"qdel removed job {job_id}'s record")
    assert producer.metric("sarchive_producer_jobs_failed_total", {"reason": "vanished"}) == 0
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0


def test_a_rewritten_record_is_the_same_job_not_a_new_one(
        rig: Rig, submitter: Submitter, gridengine: GridEngineCell) -> None:
    """qalter makes the qmaster rename a new record over the job's; releasing the job makes
    it run and end, its record rewritten and removed: one event, one detection."""
    producer = rig.start_producer()
    job_id = submitter.qsub(script=b"#!/bin/sh\necho short\n")
    rig.read_until({job_id}, timeout=30)
    detected = producer.metric("sarchive_producer_jobs_detected_total")
    record = gridengine.record_path(int(job_id))
    before = record.stat().st_ino
    env = {**os.environ, **gridengine.env}
    subprocess.run(["qalter", "-N", "renamed", job_id], env=env, check=True,
                   capture_output=True, timeout=60)
    wait_until(lambda: record.exists() and record.stat().st_ino != before, 30,
               "qalter renamed a new record over the job's")
    subprocess.run(["qrls", job_id], env=env, check=True, capture_output=True, timeout=60)
    wait_until(lambda: not record.exists(), 60, f"job {job_id} ran and its record was removed")
    marker = submitter.qsub()  # the producer has seen everything before this one
    reader = rig.read_until({marker}, timeout=30)
    assert [e.job_id for e in reader.events].count(job_id) == 1
    assert producer.metric("sarchive_producer_jobs_detected_total") == (detected or 0) + 1
    assert producer.metric("sarchive_producer_jobs_failed_total", {"reason": "vanished"}) == 0
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0


def test_jobs_submitted_before_the_producer_starts_are_caught_up_and_not_repeated(
        rig: Rig, submitter: Submitter) -> None:
    submitted = {submitter.qsub() for _ in range(10)} | {submitter.qsub("-t", "1-3")}
    first = rig.start_producer()
    rig.read_until(submitted, timeout=60)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0

    second = rig.start_producer()
    later = submitter.qsub()
    reader = rig.read_until(submitted | {later}, timeout=60)
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    delivered_once(reader.events, submitted | {later})
    # One INFO line per acknowledged job: the restart published the new job and nothing the
    # first run had acknowledged (the shared cell's spool may hold others' jobs too).
    archived = [line for line in second.log().splitlines() if " archived: " in line]
    assert [line for line in archived if f"job {later} archived" in line] == archived[-1:]
    assert not [line for line in archived
                if any(f"job {job_id} archived" in line for job_id in submitted)]


def test_a_burst_of_submissions_all_arrive_once_as_spooled(
        rig: Rig, submitter: Submitter) -> None:
    producer = rig.start_producer()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        submitted = set(pool.map(
            lambda n: submitter.qsub(script=PLAIN + b"# %d\n" % n), range(BURST)))
    submit_seconds = time.monotonic() - started
    reader = rig.read_until(submitted, timeout=120)
    events = delivered_once(reader.events, submitted)
    for job_id, event in events.items():
        assert event.script == rig.cell.script_path(int(job_id)).read_bytes(), job_id
    print(f"\nburst: {BURST} qsub in {submit_seconds:.1f} s, all delivered"
          f" {time.monotonic() - started:.1f} s after the first")
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0
