"""Grid Engine job records captured from a real SGE 8.1.9 qmaster (tests/fixtures/gridengine,
see its capture.py) decode to what `qstat -j ID -xml` said of the same job; anything else
raises GridEngineRecordError, a per-job spool read error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.cull import FREE_ELEM, unpack_element
from producer.errors import REASON_MALFORMED, SpoolReadError
from producer.gridengine_record import (
    JB_DESCRIPTOR_8_1_9,
    JB_UID,
    GridEngineJob,
    GridEngineRecordError,
    TaskRange,
    parse_job_record,
)
from testkit.gridengine import QstatJob, differences

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gridengine"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "qstat.xml").exists())


def record_bytes(case: str) -> bytes:
    record = FIXTURES / case / "record"
    return (record / "common").read_bytes() if record.is_dir() else record.read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_record_decodes_to_what_qstat_shows(case: str) -> None:
    job = parse_job_record(record_bytes(case))
    oracle = QstatJob.parse((FIXTURES / case / "qstat.xml").read_bytes())
    assert differences(job, oracle) == {}


def test_the_oracle_comparison_sees_a_difference() -> None:
    job = parse_job_record(record_bytes("export_named"))
    oracle = QstatJob.parse((FIXTURES / "export_all" / "qstat.xml").read_bytes())
    assert {"job_id", "environment", "script_file"} <= set(differences(job, oracle))


def test_every_option_of_the_submission_is_decoded() -> None:
    """qsub -N named_job -A acct42 -P sarchive -q all.q -l h_rt=1:00:00,h_vmem=1G
    -pe smp 1-2 -cwd -S /bin/bash, from /tmp/sarchive-ge-fixtures."""
    argv = json.loads((FIXTURES / "options_cwd" / "qsub.json").read_text())["argv"]
    assert "named_job" in argv and "acct42" in argv  # the fixture is the submission we think
    job = parse_job_record(record_bytes("options_cwd"))
    assert job.job_name == "named_job"
    assert (job.owner, job.owner_uid, job.group, job.group_gid) == ("root", 0, "root", 0)
    assert job.account == "acct42"
    assert job.project == "sarchive"
    assert job.hard_queues == ("all.q",)
    assert dict(job.hard_resources) == {"h_rt": "3600", "h_vmem": "1G"}
    assert job.parallel_environment == "smp"
    assert job.pe_slots == TaskRange(1, 2, 1)
    assert job.work_dir == "/tmp/sarchive-ge-fixtures"
    assert job.shell == "/bin/bash"
    assert job.array is None
    assert not job.binary and job.command == ()


def test_wd_sets_the_work_dir_and_a_plain_job_has_none() -> None:
    assert parse_job_record(record_bytes("options_wd")).work_dir == "/tmp"
    plain = parse_job_record(record_bytes("plain"))
    assert plain.work_dir is None
    assert plain.shell is None and plain.parallel_environment is None and plain.pe_slots is None
    assert plain.project is None and plain.hard_queues == () and dict(plain.hard_resources) == {}
    assert plain.account == "sge"  # qsub's default account string


def test_a_binary_job_has_its_command_and_no_script() -> None:
    job = parse_job_record(record_bytes("binary"))
    assert job.binary
    assert job.command == (b"/bin/echo", b"hello", b"binary world")
    assert not (FIXTURES / "binary" / "script").exists()


def test_array_ranges_with_and_without_step() -> None:
    assert parse_job_record(record_bytes("array")).array == TaskRange(1, 3, 1)
    assert parse_job_record(record_bytes("array_step")).array == TaskRange(2, 10, 4)


def test_a_range_reads_as_qstat_writes_it() -> None:
    """qstat -j of array_step says `job-array tasks: 2-10:4`."""
    assert str(parse_job_record(record_bytes("array_step")).array) == "2-10:4"


def test_export_named_variables_keep_their_values_and_order() -> None:
    environment = parse_job_record(record_bytes("export_named")).environment
    names = [name for name, _ in environment]
    assert names[-2:] == [b"A", b"SECRET_TOKEN"]
    assert dict(environment)[b"SECRET_TOKEN"] == b"x"
    assert dict(environment)[b"__SGE_PREFIX__O_WORKDIR"] == b"/tmp/sarchive-ge-fixtures"


def test_export_all_keeps_raw_bytes_newlines_and_empty_values() -> None:
    environment = dict(parse_job_record(record_bytes("export_all")).environment)
    assert environment[b"LATIN1"] == b"caf\xe9"
    assert environment[b"MULTILINE"] == b"first line\nsecond line"
    assert environment[b"EMPTY"] == b""


def test_a_record_rewritten_without_its_descriptor_is_read_with_8_1_9s() -> None:
    """qmaster rewrites a job it holds in its list as a bound element (no descriptor)."""
    data = record_bytes("array_running")
    assert struct.unpack(">I", data[8:12])[0] != FREE_ELEM
    job = parse_job_record(data)
    assert (job.job_id, job.array) == (20, TaskRange(1, 3, 1))


@pytest.mark.parametrize("case", [*CASES, "array_running"])
def test_each_environment_entry_says_where_its_name_and_value_lie_in_record_order(
        case: str) -> None:
    """data[start:end] is the string, data[end] its terminator, the name's just before the
    value's, every entry after the one before (an empty value is an empty span)."""
    data = record_bytes(case)
    job = parse_job_record(data)
    assert len(job.environment_spans) == len(job.environment) > 0
    ends = -1
    for (name, value), (name_span, value_span) in zip(job.environment, job.environment_spans,
                                                      strict=True):
        assert (data[name_span.start:name_span.end], data[value_span.start:value_span.end]) \
            == (name, value)
        assert data[name_span.end] == data[value_span.end] == 0
        assert ends < name_span.start and value_span.start == name_span.end + 1
        ends = value_span.end


def test_a_descriptor_naming_a_field_twice_is_refused() -> None:
    """SGE names each field once: a second value of a field would be one no look-up by name
    sees, nor masks."""
    data = bytearray(record_bytes("plain"))
    at = data.index(struct.pack(">II", JB_UID, 0x82003))
    data[at:at + 4] = struct.pack(">I", JB_UID - 1)  # JB_owner's number, a ulong now
    with pytest.raises(GridEngineRecordError, match="naming a field twice"):
        parse_job_record(bytes(data))


@pytest.mark.parametrize("case", ["plain", "options_cwd", "binary", "export_all"])
def test_the_built_in_descriptor_is_the_one_qmaster_writes(case: str) -> None:
    written = unpack_element(record_bytes(case)).descriptor
    assert [(f.name, f.type) for f in written] == [(f.name, f.type) for f in
                                                   JB_DESCRIPTOR_8_1_9]


def test_a_job_is_a_frozen_value() -> None:
    job = parse_job_record(record_bytes("plain"))
    assert isinstance(job, GridEngineJob)
    with pytest.raises(AttributeError):
        job.job_name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.hard_resources["h_rt"] = "1"  # type: ignore[index]


# ------------------------------------------------------------------ what is not a job record


@pytest.mark.parametrize("data", [
    b"",
    b"garbage",
    b"\0" * 64,
    b"#!/bin/sh\necho a script, not a record\n",
    bytes.fromhex("00000000 10010000 00000001"),  # another CULL version
])
def test_garbage_is_a_record_error(data: bytes) -> None:
    with pytest.raises(GridEngineRecordError):
        parse_job_record(data, job_id="7")


def test_every_truncation_is_a_record_error() -> None:
    data = record_bytes("options_cwd")
    for size in range(len(data)):
        with pytest.raises(GridEngineRecordError):
            parse_job_record(data[:size])


def test_bytes_after_the_record_are_a_record_error() -> None:
    with pytest.raises(GridEngineRecordError, match="after the element"):
        parse_job_record(record_bytes("plain") + b"\0\0\0\0")


def test_a_task_record_is_not_a_job_record() -> None:
    task = FIXTURES / "array_running" / "record" / "1-4096" / "1"
    with pytest.raises(GridEngineRecordError):
        parse_job_record(task.read_bytes())


def test_a_field_of_another_type_than_8_1_9s_is_refused_not_misread() -> None:
    """Another build's descriptor saying JB_uid is a bool (packed alike, four bytes): the
    buffer unpacks, the field's type is refused."""
    data = bytearray(record_bytes("plain"))
    pair = struct.pack(">II", JB_UID, 0x82003)  # JB_uid, a ulong
    at = data.index(pair)
    data[at + 4:at + 8] = struct.pack(">I", 0x82006)  # now a bool
    unpack_element(bytes(data))
    with pytest.raises(GridEngineRecordError, match=f"field {JB_UID} is a bool"):
        parse_job_record(bytes(data))


def test_a_record_error_is_a_per_job_spool_read_error() -> None:
    with pytest.raises(SpoolReadError) as caught:
        parse_job_record(b"garbage", job_id="42")
    assert isinstance(caught.value, GridEngineRecordError)
    assert caught.value.job_id == "42"
    assert caught.value.reason == REASON_MALFORMED


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(["plain", "export_all", "options_cwd", "array_running"]),
       edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                      min_size=1, max_size=8))
def test_damaged_records_decode_or_raise_a_record_error_never_anything_else(
        case: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(record_bytes(case))
    for position, byte in edits:
        data[position % len(data)] = byte
    try:
        job = parse_job_record(bytes(data))
    except GridEngineRecordError:
        return
    assert isinstance(job, GridEngineJob)
