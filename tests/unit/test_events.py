"""Building job events from spool reads: script, environment policy, metadata, identity."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.config import load_producer_config
from producer.environment import DEFAULT_REDACT, EnvPolicy, render_slurm_environment_file
from producer.errors import SpoolReadError
from producer.events import EventSettings, build_job_event
from producer.slurm_spool import read_slurm_job
from producer.spool_io import RawJob
from producer.torque_spool import parse_torque_jb, read_torque_job
from schemas.codec import JobEventCodec
from schemas.model import JobEvent, OwnerSource, Scheduler, SpoolFile, UserSource
from testkit.secrets import LEAKED, LEAKED_KEYS

FIXTURES = Path(__file__).parent.parent / "fixtures"
REAL_SLURM_JOB = FIXTURES / "slurm" / "state" / "hash.8" / "job.18"
TORQUE_JOBS = FIXTURES / "torque" / "server_priv" / "jobs"
SERVER = "torque01.cluster.example"
SUBMIT_MS = 1_700_000_000_123
READ_MS = 1_700_000_000_999

POLICY = EnvPolicy(exclude=re.compile(r"^SLURM_RLIMIT_|^LATIN1$"),
                   redact=re.compile(DEFAULT_REDACT))
SETTINGS = EventSettings(cluster="hydra", env_policy=POLICY, max_script_bytes=1 << 20,
                         host="master01", version="1.2.3")
DEFAULT_SETTINGS = dataclasses.replace(
    SETTINGS, env_policy=load_producer_config(["--cluster", "hydra"], environ={}).env_policy())

MASKED_URL = b"DATABASE_URL=postgres://user:<redacted>@host/db"


def slurm_job(script: bytes, environment: list[bytes], *, job_id: str = "42",
              submit_time_ms: int = SUBMIT_MS) -> RawJob:
    """A Slurm spool read as slurmctld would have stored these values."""
    return RawJob(Scheduler.SLURM, job_id, submit_time_ms, (
        SpoolFile("script", script + b"\0"),
        SpoolFile("environment", render_slurm_environment_file(environment)),
    ))


def spool_bytes(event: JobEvent) -> bytes:
    return b"".join(f.content for f in event.spool_files)


def everything_carried(event: JobEvent) -> bytes:
    """Every value an event carries, field by field (not the codec's framing bytes)."""
    parts: list[bytes] = []
    for value in (getattr(event, f.name) for f in dataclasses.fields(event)):
        if isinstance(value, bytes):
            parts.append(value)
        elif isinstance(value, str):
            parts.append(value.encode())
        elif isinstance(value, tuple):
            parts += [item.name.encode() + item.content if isinstance(item, SpoolFile)
                      else item.encode() for item in value]
        elif isinstance(value, Mapping):
            parts += [f"{key}={item}".encode() for key, item in value.items()]
    return b"\n".join(parts)


@pytest.fixture(scope="module")
def real_event() -> JobEvent:
    raw = dataclasses.replace(read_slurm_job(REAL_SLURM_JOB), submit_time_ms=SUBMIT_MS)
    return build_job_event(raw, SETTINGS, READ_MS).event


# --- Slurm --------------------------------------------------------------------------------

def test_real_slurm_job_event_identity_and_metadata(real_event: JobEvent) -> None:
    script = (REAL_SLURM_JOB / "script").read_bytes()[:-1]
    assert real_event == dataclasses.replace(
        real_event,
        cluster="hydra", scheduler=Scheduler.SLURM, job_id="18",
        job_key=f"hydra:slurm:18:{SUBMIT_MS}", submit_time=SUBMIT_MS, read_time=READ_MS,
        script=script, script_size=len(script),
        script_sha256=hashlib.sha256(script).hexdigest(), script_truncated=False,
        producer_host="master01", producer_version="1.2.3",
        user="alice", user_source=UserSource.USER, job_name="relax", account="proj01",
        partition="debug", work_dir="/tmp/c1/home/alice/proj", time_limit="01:00:00",
        nodes="2", ntasks="8", array_job_id="18", array_task_id="1-4%2",
        redacted_keys=("DB_PASSWORD", "GITHUB_TOKEN"),
    )
    assert real_event.directives["array"] == "1-4%2"


def test_script_drops_exactly_slurms_trailing_nul(real_event: JobEvent) -> None:
    stored = (REAL_SLURM_JOB / "script").read_bytes()
    assert stored.endswith(b"\n\0")
    assert real_event.script + b"\0" == stored


def test_environment_is_filtered_canonically_and_in_the_spool_copy(real_event: JobEvent) -> None:
    entries = real_event.environment.split(b"\0")
    assert entries[-1] == b""
    assert b"DB_PASSWORD=<redacted>" in entries
    assert b"MULTI=line1\nline2" in entries
    assert not any(e.startswith((b"SLURM_RLIMIT_", b"LATIN1=")) for e in entries)
    environment_file = next(f for f in real_event.spool_files if f.name == "environment")
    assert environment_file.content == struct.pack("=I", len(entries) - 1) + real_event.environment


def test_no_hidden_value_is_carried_anywhere(real_event: JobEvent) -> None:
    carried = everything_carried(real_event)
    for secret in (b"s3cret-pw", b"ghp_secret123", b"caf\xe9", b"18446744073709551615"):
        assert secret not in carried
    assert b"alice" in carried  # the check above can find what is there


def test_event_survives_the_codec(real_event: JobEvent) -> None:
    codec = JobEventCodec()
    assert codec.decode(codec.encode(real_event)) == real_event


def test_a_long_script_is_cut_but_described_whole() -> None:
    script = b"#!/bin/sh\n" + b"x" * 100
    event = build_job_event(slurm_job(script, []),
                        dataclasses.replace(SETTINGS, max_script_bytes=16), READ_MS).event
    assert (event.script, event.script_truncated) == (script[:16], True)
    assert (event.script_size, event.script_sha256) == (
        len(script), hashlib.sha256(script).hexdigest())
    assert next(f for f in event.spool_files if f.name == "script").content == script[:16] + b"\0"


def test_a_script_of_exactly_the_limit_is_not_truncated() -> None:
    script = b"#!/bin/sh\necho\n"
    event = build_job_event(slurm_job(script, []),
                        dataclasses.replace(SETTINGS, max_script_bytes=len(script)), READ_MS).event
    assert (event.script, event.script_truncated) == (script, False)


def test_crlf_and_non_utf8_script_bytes_are_kept_exactly() -> None:
    script = b"#!/bin/bash\r\n#SBATCH -J caf\xe9\r\necho \xff\xfe\r\n\r\n"
    event = build_job_event(slurm_job(script, []), SETTINGS, READ_MS).event
    assert event.script == script
    assert event.script_sha256 == hashlib.sha256(script).hexdigest()
    assert everything_carried(event).count(script) == 2  # the script field and its spool copy


def test_job_key_is_deterministic_and_changes_with_submit_time() -> None:
    first = build_job_event(slurm_job(b"#!/bin/sh\n", []), SETTINGS, READ_MS).event
    again = build_job_event(slurm_job(b"#!/bin/sh\n", []), SETTINGS, READ_MS + 5000).event
    reused = build_job_event(slurm_job(b"#!/bin/sh\n", [], submit_time_ms=SUBMIT_MS + 1),
                         SETTINGS, READ_MS).event
    assert first.job_key == again.job_key == f"hydra:slurm:42:{SUBMIT_MS}"
    assert reused.job_key != first.job_key


def test_inherited_slurm_array_variables_do_not_make_an_array() -> None:
    """sbatch passes SLURM_ARRAY_* on from the submitting shell (seen on a real spool)."""
    job = slurm_job(b"#!/bin/sh\n", [b"SLURM_ARRAY_JOB_ID=999", b"SLURM_ARRAY_TASK_ID=3"])
    event = build_job_event(job, SETTINGS, READ_MS).event
    assert (event.array_job_id, event.array_task_id) == (None, None)


def test_sbatch_input_variables_override_directives() -> None:
    script = b"#!/bin/sh\n#SBATCH -J script -A a1 -p p1 -t 10 --array=1-2\n"
    event = build_job_event(slurm_job(script, [
        b"SLURM_JOB_NAME=effective", b"SBATCH_ACCOUNT=a2", b"SBATCH_PARTITION=p2",
        b"SBATCH_TIMELIMIT=20", b"SBATCH_ARRAY_INX=5-6", b"SLURM_SUBMIT_DIR=/home/bob/x",
    ]), SETTINGS, READ_MS).event
    assert (event.job_name, event.account, event.partition, event.time_limit) == (
        "effective", "a2", "p2", "20")
    assert (event.array_job_id, event.array_task_id) == ("42", "5-6")


def test_work_dir_is_chdir_then_submit_dir_then_pwd() -> None:
    def work_dir(script: bytes, environment: list[bytes]) -> str | None:
        return build_job_event(slurm_job(script, environment), SETTINGS, READ_MS).event.work_dir

    environment = [b"PWD=/pwd", b"SLURM_SUBMIT_DIR=/submit"]
    assert work_dir(b"#SBATCH -D /chdir\n", environment) == "/chdir"
    assert work_dir(b"", environment) == "/submit"
    assert work_dir(b"", environment[:1]) == "/pwd"
    assert work_dir(b"", []) is None


def test_user_falls_back_to_the_submit_directory_owner() -> None:
    job = slurm_job(b"", [b"SLURM_SUBMIT_DIR=/home/erin/run"])
    event = build_job_event(job, SETTINGS, READ_MS).event
    assert (event.user, event.user_source) == ("erin", UserSource.WORKDIR)


def test_a_redacted_value_never_becomes_metadata() -> None:
    policy = EnvPolicy(exclude=None, redact=re.compile("^(USER|SLURM_JOB_NAME)$"))
    event = build_job_event(slurm_job(b"#SBATCH -J fromscript\n",
                                  [b"USER=root", b"SLURM_JOB_NAME=x"]),
                        dataclasses.replace(SETTINGS, env_policy=policy), READ_MS).event
    assert (event.user, event.job_name) == (None, "fromscript")


# A secret starts with \x01, which nothing else in these jobs holds, so finding it anywhere
# can only mean it leaked.
secret_values = st.binary(max_size=30).filter(lambda v: b"\0" not in v).map(lambda v: b"\x01" + v)
fillers = st.binary(max_size=20).filter(lambda v: b"\0" not in v and b"\x01" not in v)


@given(secret=secret_values, filler=fillers)
def test_hidden_values_are_carried_nowhere(secret: bytes, filler: bytes) -> None:
    raw = slurm_job(b"#!/bin/sh\n", [b"A_TOKEN=" + secret, b"SLURM_RLIMIT_X=" + secret,
                                     b"NOTE=" + filler])
    event = build_job_event(raw, SETTINGS, READ_MS).event
    assert secret not in everything_carried(event)
    assert b"NOTE=" + filler + b"\0" in spool_bytes(event)


def test_leaked_secrets_leave_neither_the_event_nor_the_environment_file_copy() -> None:
    """Nor the encoded event (what the outbox and the topic hold), whose environment file is
    rebuilt on decoding from the masked environment (schema version 3)."""
    raw = slurm_job(b"#!/bin/sh\n", [b"USER=alice", *(entry for entry, _ in LEAKED)])
    codec = JobEventCodec()
    encoded = codec.encode(build_job_event(raw, DEFAULT_SETTINGS, READ_MS).event)
    event = codec.decode(encoded)
    carried = everything_carried(event)
    for _, secret in LEAKED:
        assert secret not in carried
        assert secret not in encoded
    assert event.redacted_keys == LEAKED_KEYS
    environment_file = next(f for f in event.spool_files if f.name == "environment")
    assert MASKED_URL + b"\0" in environment_file.content
    assert b"USER=alice\0" in environment_file.content  # the checks above can find what is there


def test_a_missing_environment_file_gives_an_empty_environment() -> None:
    raw = RawJob(Scheduler.SLURM, "1", SUBMIT_MS, (SpoolFile("script", b"echo\0"),))
    event = build_job_event(raw, SETTINGS, READ_MS).event
    assert (event.environment, [f.name for f in event.spool_files]) == (b"", ["script"])


def test_a_read_without_script_cannot_become_an_event() -> None:
    raw = RawJob(Scheduler.SLURM, "1", SUBMIT_MS, ())
    with pytest.raises(SpoolReadError) as caught:
        build_job_event(raw, SETTINGS, READ_MS)
    assert caught.value.reason == "malformed"


def test_settings_require_a_positive_script_limit() -> None:
    with pytest.raises(ValueError, match="max_script_bytes"):
        dataclasses.replace(SETTINGS, max_script_bytes=0)


# --- Torque -------------------------------------------------------------------------------

def torque_event(jobs_dir: Path, base: str, settings: EventSettings = SETTINGS) -> JobEvent:
    raw = dataclasses.replace(read_torque_job(jobs_dir, base), submit_time_ms=SUBMIT_MS)
    return build_job_event(raw, settings, READ_MS).event


def test_torque_job_metadata_comes_from_the_job_record() -> None:
    event = torque_event(TORQUE_JOBS, f"4711.{SERVER}")
    assert (event.job_id, event.job_key) == (f"4711.{SERVER}",
                                            f"hydra:torque:4711.{SERVER}:{SUBMIT_MS}")
    assert (event.user, event.user_source) == ("alice", UserSource.SPOOL)
    assert (event.owner, event.owner_uid, event.owner_source) == (
        "alice", None, OwnerSource.SPOOL_RECORD)
    assert (event.job_name, event.account, event.partition, event.work_dir) == (
        "relax", "proj01", "batch", "/home/alice/runs")
    assert (event.time_limit, event.nodes, event.ntasks) == ("01:00:00", "2:ppn=4", "4")
    assert (event.array_job_id, event.array_task_id) == (None, None)
    assert event.directives["l.walltime"] == "01:00:00"
    assert event.script == (TORQUE_JOBS / f"4711.{SERVER}.SC").read_bytes()


def test_torque_secrets_leave_neither_variables_nor_submit_args() -> None:
    event = torque_event(TORQUE_JOBS, f"4711.{SERVER}")
    assert event.redacted_keys == ("MY_API_KEY",)
    assert b"MY_API_KEY=<redacted>\0INPUT_LIST=a,b,c\0EQUATION=x=y+1\0" in event.environment
    assert b"abc123" not in everything_carried(event)
    assert b"PBS_O_WORKDIR=/home/alice/runs" in spool_bytes(event)


def test_torque_array_named_the_torque_way() -> None:
    event = torque_event(TORQUE_JOBS, f"4712.{SERVER}")
    assert (event.job_id, event.array_job_id, event.array_task_id) == (
        f"4712[].{SERVER}", f"4712[].{SERVER}", "1-2")
    assert [f.name for f in event.spool_files] == [
        f"4712.{SERVER}.SC", f"4712.{SERVER}.JB", f"4712.{SERVER}.TA",
        f"4712-1.{SERVER}.JB", f"4712-2.{SERVER}.JB"]
    assert b"PBS_ARRAYID" not in event.environment  # the array's own record, not a task's


def test_torque_array_task_range_falls_back_to_the_task_records(tmp_path: Path) -> None:
    record = (TORQUE_JOBS / f"4713[0].{SERVER}.JB").read_bytes().replace(
        b'    <job_array_request flags="1">0-1</job_array_request>\n', b"")
    (tmp_path / "8[].srv.SC").write_bytes(b"#!/bin/sh\nhostname\n")
    for index in (1, 2, 3, 7):
        (tmp_path / f"8[{index}].srv.JB").write_bytes(record)
    event = torque_event(tmp_path, "8[].srv")
    assert (event.array_job_id, event.array_task_id) == ("8[].srv", "1-3,7")


def test_torque_script_is_cut_like_its_spool_copy() -> None:
    base = f"4714.{SERVER}"
    event = torque_event(TORQUE_JOBS / "4", base,
                         dataclasses.replace(SETTINGS, max_script_bytes=20))
    whole = (TORQUE_JOBS / "4" / f"{base}.SC").read_bytes()
    assert (event.script, event.script_truncated, event.script_size) == (
        whole[:20], True, len(whole))
    assert next(f for f in event.spool_files if f.name == f"{base}.SC").content == whole[:20]


def test_torque_event_survives_the_codec() -> None:
    codec = JobEventCodec()
    event = torque_event(TORQUE_JOBS, f"4713[].{SERVER}")
    assert codec.decode(codec.encode(event)) == event


def test_torque_leaked_secrets_leave_neither_variable_list_nor_submit_args(
        tmp_path: Path) -> None:
    """qsub -v copies a value into submit_args: a key masked by its value hides it there too."""
    variables = b",".join([b"PBS_O_HOME=/home/u", *(entry for entry, _ in LEAKED)])
    (tmp_path / "9.srv.SC").write_bytes(b"#!/bin/sh\nhostname\n")
    (tmp_path / "9.srv.JB").write_bytes(
        b'<?xml version="1.0"?>\n<job>\n  <jobid>9.srv</jobid>\n  <attributes>\n'
        b'    <Job_Owner flags="1">u@login</Job_Owner>\n'
        b'    <Variable_List flags="1">' + variables + b"</Variable_List>\n"
        b'    <submit_args flags="1">-v ' + LEAKED[4][0] + b" job.sh</submit_args>\n"
        b"  </attributes>\n</job>\n")
    codec = JobEventCodec()
    encoded = codec.encode(torque_event(tmp_path, "9.srv", DEFAULT_SETTINGS))
    event = codec.decode(encoded)
    for _, secret in LEAKED:
        assert secret not in everything_carried(event)
        assert secret not in encoded
    assert event.redacted_keys == LEAKED_KEYS
    record = next(f.content for f in event.spool_files if f.name == "9.srv.JB")
    assert MASKED_URL in parse_torque_jb(record).variables
    assert b'<submit_args flags="1">&lt;redacted&gt;</submit_args>' in record
