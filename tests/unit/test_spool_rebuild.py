"""Version 3 carries rebuildable spool files as recipes, and decoding rebuilds them exactly."""

from __future__ import annotations

import io
import re
import struct
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from producer.environment import DEFAULT_REDACT, EnvPolicy, render_slurm_environment_file
from producer.events import EventSettings, build_job_event
from producer.jobs import JobRef
from producer.read_outcomes import ReadEvent
from producer.reader_processes import JobReaders
from producer.slurm_spool import read_slurm_job
from producer.spool_io import RawJob
from producer.torque_spool import read_torque_job
from schemas.codec import HEADER_SIZE, JobEventCodec, load_schema_versions, to_record
from schemas.errors import CorruptEventError
from schemas.model import Scheduler, SpoolFile
from schemas.spool_rebuild import SpoolFileRebuild, rebuild_of, rebuild_spool_file
from testkit.events import job_event

FIXTURES = Path(__file__).parent.parent / "fixtures"
REAL_SLURM_JOB = FIXTURES / "slurm" / "state" / "hash.8" / "job.18"
TORQUE_JOBS = FIXTURES / "torque" / "server_priv" / "jobs"
V3 = JobEventCodec()
V1 = JobEventCodec(write_version=1)
SETTINGS = EventSettings(
    cluster="hydra", max_script_bytes=1 << 20, host="master01", version="1.2.3",
    env_policy=EnvPolicy(exclude=re.compile(r"^SLURM_RLIMIT_"),
                         redact=re.compile(DEFAULT_REDACT)))

entries = st.lists(st.binary(max_size=40).filter(lambda e: b"\0" not in e), max_size=30)
byte_orders = st.sampled_from(["<", ">"])


def slurm_files(script: bytes, environment: list[bytes], order: str) -> tuple[SpoolFile, ...]:
    """Slurm's two files as slurmctld writes them on a host of this byte order."""
    return (SpoolFile("script", script + b"\0"),
            SpoolFile("environment", struct.pack(f"{order}I", len(environment))
                      + b"".join(e + b"\0" for e in environment)))


def wire_spool_files(data: bytes) -> list[dict[str, object]]:
    """The spool_files of a version 3 message as they travel, before any rebuild."""
    record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), V3.writer.parsed,
                                        V3.writer.parsed)
    assert isinstance(record, dict)
    files: list[dict[str, object]] = record["spool_files"]
    return files


@given(st.binary(max_size=2048), entries, byte_orders)
def test_slurm_files_travel_as_recipes_and_decode_byte_for_byte(
        script: bytes, environment: list[bytes], order: str) -> None:
    event = job_event(script=script, environment=b"".join(e + b"\0" for e in environment),
                      spool_files=slurm_files(script, environment, order))
    data = V3.encode(event)
    assert V3.decode(data).spool_files == event.spool_files
    travelled = wire_spool_files(data)
    assert [f["content"] for f in travelled] == [b"", b""]
    assert travelled[0]["rebuild"] == "SCRIPT_NUL"
    # An empty environment's count reads the same in both orders.
    assert travelled[1]["rebuild"] in (
        {"ENVIRONMENT_COUNT_LE", "ENVIRONMENT_COUNT_BE"} if not environment
        else {"ENVIRONMENT_COUNT_LE" if order == "<" else "ENVIRONMENT_COUNT_BE"})


@given(st.binary(max_size=256), st.binary(max_size=256), st.binary(max_size=256))
def test_a_recipe_is_chosen_only_when_it_rebuilds_the_file_exactly(
        content: bytes, script: bytes, environment: bytes) -> None:
    rebuild = rebuild_of(content, script, environment)
    if rebuild is not SpoolFileRebuild.CARRIED:
        assert rebuild_spool_file(rebuild, script, environment) == content


@pytest.mark.parametrize("content", [
    b"\x03\x00\x00\x00A=1\0B=2\0",  # a count header that does not match the entries
    b"\x02\x00\x00\x00A=1\0B=2\0\0",  # one byte more
    b"#!/bin/sh\ntrue\n\n",  # the script with another terminator
])
def test_a_file_that_differs_by_one_byte_is_carried_as_stored(content: bytes) -> None:
    event = job_event(script=b"#!/bin/sh\ntrue\n", environment=b"A=1\0B=2\0",
                      spool_files=(SpoolFile("environment", content),))
    data = V3.encode(event)
    assert wire_spool_files(data) == [
        {"name": "environment", "content": content, "rebuild": "CARRIED"}]
    assert V3.decode(data) == event


def test_real_slurm_job_with_redaction_decodes_to_the_files_version_1_carried() -> None:
    """The rebuilt environment file is the REDACTED one the producer would have carried."""
    event = build_job_event(read_slurm_job(REAL_SLURM_JOB), SETTINGS, 1_700_000_000_999).event
    assert event.redacted_keys  # the job has secrets: redaction changed the file
    from_v3, from_v1 = V3.decode(V3.encode(event)), V1.decode(V1.encode(event))
    assert from_v3.spool_files == from_v1.spool_files == event.spool_files
    environment = next(f.content for f in from_v3.spool_files if f.name == "environment")
    assert environment == render_slurm_environment_file(event.environment.split(b"\0")[:-1])
    assert b"<redacted>" in environment


def test_version_3_leaves_out_the_bytes_of_slurms_two_files() -> None:
    event = build_job_event(read_slurm_job(REAL_SLURM_JOB), SETTINGS, 1_700_000_000_999).event
    repeated = sum(len(f.content) for f in event.spool_files)
    # A rebuilt file still costs two bytes: its recipe's index and its empty content's length.
    assert len(V1.encode(event)) - len(V3.encode(event)) >= repeated - 2 * len(event.spool_files)


def test_torque_script_travels_as_a_recipe_and_job_records_are_carried() -> None:
    raw: RawJob = read_torque_job(TORQUE_JOBS, "4713[].torque01.cluster.example")
    event = build_job_event(raw, SETTINGS, 1_700_000_000_999).event
    data = V3.encode(event)
    assert {f["name"]: f["rebuild"] for f in wire_spool_files(data)} == {
        f.name: "SCRIPT" if f.name.endswith(".SC") else "CARRIED" for f in event.spool_files}
    assert V3.decode(data).spool_files == event.spool_files


def test_a_gridengine_event_round_trips() -> None:
    event = job_event(scheduler=Scheduler.GRIDENGINE, spool_files=())
    assert V3.decode(V3.encode(event)) == event


def test_a_rebuilt_file_that_also_carries_bytes_is_a_corrupt_event() -> None:
    record = to_record(job_event())
    record["spool_files"][0]["content"] = b"smuggled"
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, V3.writer.parsed, record)
    with pytest.raises(CorruptEventError, match="rebuilt"):
        V3.decode(V3.encode(job_event())[:HEADER_SIZE] + buffer.getvalue())


def test_a_carried_file_cannot_be_rebuilt() -> None:
    with pytest.raises(ValueError, match="carried"):
        rebuild_spool_file(SpoolFileRebuild.CARRIED, b"", b"")


def test_version_1_and_2_writers_still_carry_every_file() -> None:
    event = job_event()
    for version in (1, 2):
        codec = JobEventCodec(write_version=version)
        assert codec.decode(codec.encode(event)) == event
        assert codec.encode(event).count(event.script) == 2




def test_the_producer_writes_the_newest_version_with_slurms_files_as_recipes(
        synthetic_spool: Any) -> None:
    """What a reader hands the outbox: a v3 message without the copies, which decodes to
    the files exactly as slurmctld wrote them (nothing redacted here)."""
    job_dir = synthetic_spool.write_job(5, b"#!/bin/sh\necho five\n", (b"USER=alice", b"A=1"))
    readers = JobReaders(SETTINGS, 0, Counter("restarts", "test", registry=CollectorRegistry()))
    readers.submit([JobRef(Scheduler.SLURM, "hash.5/job.5", job_dir)])
    [(_, outcome)] = readers.results()
    assert isinstance(outcome, ReadEvent)
    newest = load_schema_versions()[max(load_schema_versions())]
    assert (newest.version, outcome.value[2:HEADER_SIZE]) == (3, newest.fingerprint)
    assert [f["rebuild"] for f in wire_spool_files(outcome.value)] == [
        "SCRIPT_NUL", "ENVIRONMENT_COUNT_LE" if sys.byteorder == "little"
        else "ENVIRONMENT_COUNT_BE"]
    assert {f.name: f.content for f in V3.decode(outcome.value).spool_files} == {
        name: (job_dir / name).read_bytes() for name in ("script", "environment")}
