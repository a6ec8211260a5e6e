"""Torque spool: file names, .JB job records, Variable_List, and reading a job's files."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.errors import JobIncompleteError, SpoolReadError
from producer.torque_spool import (
    TorqueJobInfo,
    parse_torque_jb,
    parse_variable_list,
    read_torque_job,
    render_torque_jb,
    render_variable_list,
    torque_job_base,
    torque_subdir,
)
from schemas.model import REDACTED_MARKER, Scheduler

FIXTURES = Path(__file__).parent.parent / "fixtures" / "torque" / "server_priv" / "jobs"
SERVER = "torque01.cluster.example"
SUBMIT_NS = 1_700_000_000_250_000_000


def torque_record(job_id: str = "9.srv", *, variables: str = "PBS_O_HOME=/home/u",
                  euser: str = "u", extra: str = "") -> bytes:
    """A minimal Torque 6 .JB document."""
    return (
        '<?xml version="1.0"?>\n<job>\n  <version>1536</version>\n'
        f"  <jobid>{job_id}</jobid>\n  <fileprefix>{job_id}</fileprefix>\n"
        "  <queue>batch</queue>\n  <attributes>\n"
        '    <Job_Name flags="1">test</Job_Name>\n'
        f'    <Job_Owner flags="1">{euser}@login</Job_Owner>\n'
        f'    <Variable_List flags="1">{variables}</Variable_List>\n'
        f'    <euser flags="1">{euser}</euser>\n{extra}'
        "  </attributes>\n</job>\n"
    ).encode()


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """A copy of the fixture spool with every script's mtime set to SUBMIT_NS."""
    target = tmp_path / "jobs"
    shutil.copytree(FIXTURES, target)
    for script in target.rglob("*.SC"):
        os.utime(script, ns=(SUBMIT_NS, SUBMIT_NS))
    return target


def reason_of(jobs_dir: Path, base: str) -> str:
    with pytest.raises(SpoolReadError) as caught:
        read_torque_job(jobs_dir, base)
    return caught.value.reason


# --- file names -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "base"), [
    ("123.server.SC", "123.server"),
    ("123.server.JB", "123.server"),
    ("123.server.domain.org.TA", "123.server.domain.org"),
    ("123-4.server.JB", "123.server"),
    ("123[].server.TA", "123[].server"),
    ("123[].server.SC", "123[].server"),
    ("123[4].server.JB", "123[].server"),
    ("123.SC", "123"),
    ("123.server.OU", None),
    ("123.server.ER", None),
    ("123.server.JB.tmp", None),
    ("abc.server.SC", None),
    ("server.SC", None),
])
def test_job_base_of_a_spool_file_name(name: str, base: str | None) -> None:
    assert torque_job_base(name) == base


def test_subdirectory_is_the_last_digit_of_the_job_number() -> None:
    assert torque_subdir("4714.server") == "4"
    assert torque_subdir("1230[].server") == "0"
    with pytest.raises(ValueError, match="not a Torque job"):
        torque_subdir("server")


# --- job records ------------------------------------------------------------------------------

def test_parses_a_record_that_follows_a_binary_job_structure() -> None:
    info = parse_torque_jb((FIXTURES / f"4711.{SERVER}.JB").read_bytes())
    assert info == TorqueJobInfo(
        job_id=f"4711.{SERVER}", euser="alice", job_owner="alice@login01", job_name="relax",
        queue="batch", account="proj01", walltime="01:00:00", nodes="2:ppn=4",
        work_dir="/home/alice/runs", array_request=None, variables=info.variables,
    )
    assert info.variables[-3:] == (b"MY_API_KEY=abc123", b"INPUT_LIST=a,b,c",
                                   b"EQUATION=x=y+1")


def test_parses_an_array_task_record() -> None:
    info = parse_torque_jb((FIXTURES / f"4713[1].{SERVER}.JB").read_bytes())
    assert (info.job_id, info.array_request, info.queue) == (f"4713[1].{SERVER}", "0-1", "short")
    assert info.variables[-1] == b"PBS_ARRAYID=1"


def test_xml_escapes_in_values_are_decoded() -> None:
    info = parse_torque_jb(torque_record(variables="A=x&amp;y&lt;z,B=&quot;q&quot;"))
    assert info.variables == (b"A=x&y<z", b'B="q"')


def test_queue_falls_back_to_the_fixed_field() -> None:
    assert parse_torque_jb(torque_record()).queue == "batch"


@pytest.mark.parametrize("data", [b"", b"\0\0\0", torque_record()[:80], torque_record()[:-8]])
def test_an_empty_or_unterminated_record_is_incomplete(data: bytes) -> None:
    with pytest.raises(JobIncompleteError):
        parse_torque_jb(data, job_id="9.srv")


@pytest.mark.parametrize("data", [
    b"\x01\x02garbage without any xml",
    b"<?xml version='1.0'?><job><attributes></job>",  # closed but not well-formed
    b"<?xml version='1.0'?><notajob></notajob></job>",
    b'<?xml version="1.0"?><!DOCTYPE job [<!ENTITY a "b">]><job>&a;</job>',
])
def test_a_record_that_can_never_parse_is_malformed(data: bytes) -> None:
    with pytest.raises(SpoolReadError) as caught:
        parse_torque_jb(data)
    assert not isinstance(caught.value, JobIncompleteError)
    assert caught.value.reason == "malformed"


@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=40).map(lambda b: torque_record()[:60] + b + b"</job>")))
def test_arbitrary_bytes_parse_or_raise_spool_read_error(data: bytes) -> None:
    with contextlib.suppress(SpoolReadError):
        parse_torque_jb(data)


variable_entries = st.lists(
    st.text(st.characters(blacklist_characters="\\\0", blacklist_categories=["Cs"]),
            min_size=1, max_size=15),
    max_size=8,
)


@given(variable_entries)
def test_variable_list_round_trips_commas_and_equals(entries: list[str]) -> None:
    """Values without backslashes round trip (Torque's escaping leaves 'a\\' + ',' ambiguous)."""
    encoded = tuple(entry.encode() for entry in entries)
    assert parse_variable_list(render_variable_list(encoded)) == encoded


def test_variable_list_unescapes_only_escaped_commas() -> None:
    assert parse_variable_list(r"A=1\,2,B=c:\dir,,C=") == (b"A=1,2", b"B=c:\\dir", b"C=")


def test_rendered_record_carries_only_the_given_variables() -> None:
    record = torque_record(
        variables="HOME=/h,MY_TOKEN=t0ps3cret,LIST=a\\,b",
        extra='    <submit_args flags="1">-v MY_TOKEN=t0ps3cret job.sh</submit_args>\n',
    )
    rendered = render_torque_jb(record, [b"HOME=/h", b"MY_TOKEN=" + REDACTED_MARKER,
                                         b"LIST=a,b"], ["MY_TOKEN"])
    assert b"t0ps3cret" not in rendered
    info = parse_torque_jb(rendered)
    assert info.variables == (b"HOME=/h", b"MY_TOKEN=<redacted>", b"LIST=a,b")
    assert rendered.replace(b"&lt;redacted&gt;", b"").count(b"redacted") == 0
    assert rendered.startswith(record[:record.index(b"<Variable_List")])


def test_submit_args_without_hidden_keys_stay_as_stored() -> None:
    record = torque_record(extra='    <submit_args flags="1">-v X=1 job.sh</submit_args>\n')
    assert render_torque_jb(record, [b"PBS_O_HOME=/home/u"], ["TOKEN"]) == record


# --- reading a job ----------------------------------------------------------------------------

def test_reads_a_plain_job_script_mtime_as_submit_time(jobs_dir: Path) -> None:
    raw = read_torque_job(jobs_dir, f"4711.{SERVER}")
    assert (raw.scheduler, raw.job_id, raw.submit_time_ms) == (
        Scheduler.TORQUE, f"4711.{SERVER}", SUBMIT_NS // 1_000_000)
    assert [(f.name, f.content) for f in raw.files] == [
        (name, (FIXTURES / name).read_bytes())
        for name in (f"4711.{SERVER}.SC", f"4711.{SERVER}.JB")
    ]


def test_reads_an_array_named_the_torque_way(jobs_dir: Path) -> None:
    raw = read_torque_job(jobs_dir, torque_job_base(f"4712-2.{SERVER}.JB") or "")
    assert raw.job_id == f"4712[].{SERVER}"
    assert [f.name for f in raw.files] == [
        f"4712.{SERVER}.SC", f"4712.{SERVER}.JB", f"4712.{SERVER}.TA",
        f"4712-1.{SERVER}.JB", f"4712-2.{SERVER}.JB"]


def test_reads_an_array_in_the_bracketed_spelling(jobs_dir: Path) -> None:
    raw = read_torque_job(jobs_dir, torque_job_base(f"4713[].{SERVER}.TA") or "")
    assert raw.job_id == f"4713[].{SERVER}"
    assert sorted(f.name for f in raw.files) == sorted([
        f"4713[].{SERVER}.SC", f"4713[].{SERVER}.TA",
        f"4713[0].{SERVER}.JB", f"4713[1].{SERVER}.JB"])


def test_reads_a_job_from_its_hashed_subdirectory(jobs_dir: Path) -> None:
    base = f"4714.{SERVER}"
    raw = read_torque_job(jobs_dir / torque_subdir(base), base)
    script = raw.file(f"{base}.SC")
    assert script is not None
    assert script.content == (b"#!/bin/bash\r\n#PBS -N dos\r\n#PBS -l nodes=1:ppn=8\r\n"
                              b"echo \xe9t\xe9\r\n")


def test_a_task_record_alone_makes_an_array_ready(tmp_path: Path) -> None:
    (tmp_path / "5.srv.SC").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "5-3.srv.JB").write_bytes(torque_record("5[3].srv"))
    raw = read_torque_job(tmp_path, "5.srv")
    assert raw.job_id == "5[].srv"
    assert [f.name for f in raw.files] == ["5.srv.SC", "5-3.srv.JB"]


def test_other_jobs_files_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "5.srv.SC").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "5.srv.JB").write_bytes(torque_record("5.srv"))
    for other in ("55.srv.JB", "5.other.JB", "5-1.other.JB", "15-1.srv.JB", "5.srv.OU"):
        (tmp_path / other).write_bytes(b"not this job")
    raw = read_torque_job(tmp_path, "5.srv")
    assert (raw.job_id, [f.name for f in raw.files]) == ("5.srv", ["5.srv.SC", "5.srv.JB"])


def test_a_script_without_its_record_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "6.srv.SC").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(JobIncompleteError):
        read_torque_job(tmp_path, "6.srv")


def test_a_record_still_being_written_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "6.srv.SC").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "6.srv.JB").write_bytes(torque_record("6.srv")[:100])
    with pytest.raises(JobIncompleteError):
        read_torque_job(tmp_path, "6.srv")


def test_a_garbage_record_is_malformed(tmp_path: Path) -> None:
    (tmp_path / "6.srv.SC").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "6.srv.JB").write_bytes(b"\x00\x01binary only, no xml ever")
    assert reason_of(tmp_path, "6.srv") == "malformed"


def test_a_record_without_its_script_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "6.srv.JB").write_bytes(torque_record("6.srv"))
    with pytest.raises(JobIncompleteError):
        read_torque_job(tmp_path, "6.srv")


def test_a_symlinked_record_is_refused(jobs_dir: Path, tmp_path: Path) -> None:
    record = jobs_dir / f"4711.{SERVER}.JB"
    (tmp_path / "elsewhere").write_bytes(record.read_bytes())
    record.unlink()
    record.symlink_to(tmp_path / "elsewhere")
    assert reason_of(jobs_dir, f"4711.{SERVER}") == "symlink"


def test_a_vanished_jobs_directory_is_vanished(tmp_path: Path) -> None:
    assert reason_of(tmp_path / "gone", "7.srv") == "vanished"


@pytest.mark.parametrize("base", ["7[3].srv", "srv", "7.srv/x"])
def test_a_base_that_is_no_job_prefix_is_not_a_job(tmp_path: Path, base: str) -> None:
    assert reason_of(tmp_path, base) == "not-a-job"
