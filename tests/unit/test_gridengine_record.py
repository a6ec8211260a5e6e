"""Grid Engine job records captured from a real SGE 8.1.9 qmaster (tests/fixtures/gridengine,
see its capture.py) decode to what `qstat -j ID -xml` said of the same job; anything else
raises GridEngineRecordError, a per-job spool read error."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

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

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gridengine"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "qstat.xml").exists())


def record_bytes(case: str) -> bytes:
    record = FIXTURES / case / "record"
    return (record / "common").read_bytes() if record.is_dir() else record.read_bytes()


@dataclass(frozen=True)
class Oracle:
    """`qstat -j ID -xml` of the job: its fields as the bytes qmaster printed."""

    job: ElementTree.Element

    @classmethod
    def of(cls, case: str) -> Oracle:
        # qstat prints values unescaped, not always UTF-8: read the bytes as Latin-1 and
        # encode each value back the same way to get them exactly.
        root = ElementTree.fromstring((FIXTURES / case / "qstat.xml").read_bytes()
                                      .decode("latin-1"))
        job = root.find("djob_info/element")
        assert job is not None
        return cls(job)

    def raw(self, tag: str) -> bytes | None:
        node = self.job.find(tag)
        return None if node is None or node.text is None else node.text.encode("latin-1")

    def text(self, tag: str) -> str | None:
        raw = self.raw(tag)
        return None if raw is None else raw.decode("utf-8", "replace")

    def rows(self, list_tag: str, *fields: str) -> list[tuple[bytes | None, ...]]:
        return [
            tuple(None if (n := element.find(f)) is None or n.text is None
                  else n.text.encode("latin-1") for f in fields)
            for element in self.job.findall(f"{list_tag}/*")
        ]


@pytest.mark.parametrize("case", CASES)
def test_record_decodes_to_what_qstat_shows(case: str) -> None:
    job = parse_job_record(record_bytes(case))
    oracle = Oracle.of(case)
    assert job.job_id == int(oracle.text("JB_job_number") or 0)
    assert job.job_name == oracle.text("JB_job_name")
    assert job.owner == oracle.text("JB_owner")
    assert job.owner_uid == int(oracle.text("JB_uid") or -1)
    assert job.group == oracle.text("JB_group")
    assert job.group_gid == int(oracle.text("JB_gid") or -1)
    assert job.account == oracle.text("JB_account")
    assert job.project == oracle.text("JB_project")
    assert job.work_dir == oracle.text("JB_cwd")
    assert job.script_file == oracle.text("JB_script_file")
    assert job.exec_file == oracle.text("JB_exec_file")
    assert job.submit_time_ms == int(oracle.text("JB_submission_time") or 0) * 1000
    assert job.parallel_environment == oracle.text("JB_pe")
    assert list(job.environment) == [
        (name or b"", value or b"")
        for name, value in oracle.rows("JB_env_list", "VA_variable", "VA_value")
    ]
    assert [(q.encode(),) for q in job.hard_queues] == oracle.rows("JB_hard_queue_list",
                                                                   "QR_name")
    assert [(k.encode(), v.encode()) for k, v in job.hard_resources.items()] == oracle.rows(
        "JB_hard_resource_list", "CE_name", "CE_stringval")
    assert [(a,) for a in job.job_args] == oracle.rows("JB_job_args", "ST_name")
    shells = oracle.rows("JB_shell_list", "PN_path")
    assert job.shell == (shells[0][0].decode() if shells and shells[0][0] else None)
    assert job.pe_slots == _range(oracle.rows("JB_pe_range", "RN_min", "RN_max", "RN_step"))
    structure = _range(oracle.rows("JB_ja_structure", "RN_min", "RN_max", "RN_step"))
    is_array = int(oracle.text("JB_type") or 0) & 0x80
    assert job.array == (structure if is_array else None)


def _range(rows: list[tuple[bytes | None, ...]]) -> TaskRange | None:
    if not rows:
        return None
    start, end, step = (int(value or 0) for value in rows[0])
    return TaskRange(start, end, step)


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
