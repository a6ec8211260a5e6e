"""Slurm spool parsing and reading, against files a real slurmctld 22.05 wrote."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.environment import render_slurm_environment_file
from producer.errors import JobIncompleteError, SpoolReadError
from producer.slurm_spool import (
    MAX_ENVIRONMENT_ENTRIES,
    parse_environment_file,
    read_slurm_job,
    script_complete,
    slurm_job_dir,
)
from producer.spool_io import RawJob, open_spool_dir, read_spool_file
from schemas.model import Scheduler

REAL_JOB = Path(__file__).parent.parent / "fixtures" / "slurm" / "state" / "hash.8" / "job.18"
SUBMIT_NS = 1_700_000_123_456_789_000
NOBODY = 65534


def count(n: int) -> bytes:
    return struct.pack("=I", n)


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """A copy of the real job.18 with a known script mtime."""
    target = tmp_path / "hash.8" / "job.18"
    shutil.copytree(REAL_JOB, target)
    os.utime(target / "script", ns=(SUBMIT_NS, SUBMIT_NS))
    return target


def reason_of(job_dir: Path) -> str:
    with pytest.raises(SpoolReadError) as caught:
        read_slurm_job(job_dir)
    return caught.value.reason


# --- the environment file format ------------------------------------------------------------

def test_real_environment_file_has_a_little_endian_count_and_nul_terminated_entries() -> None:
    entries = parse_environment_file((REAL_JOB / "environment").read_bytes())
    assert len(entries) == 28
    assert entries[:3] == [b"HOME=/home/alice", b"USER=alice", b"LOGNAME=alice"]
    assert b"MULTI=line1\nline2" in entries
    assert b"EQUATION=x=y=1" in entries
    assert b"LATIN1=caf\xe9" in entries  # not UTF-8, kept as bytes
    assert b"SLURM_SUBMIT_DIR=/tmp/c1/home/alice/proj" in entries


def test_empty_environment_is_a_zero_count_alone() -> None:
    assert parse_environment_file(count(0)) == []


def test_empty_entries_count_as_entries() -> None:
    assert parse_environment_file(count(2) + b"\0A=1\0") == [b"", b"A=1"]


@pytest.mark.parametrize("data", [b"", b"\x02", b"\x02\x00\x00"])
def test_a_partial_count_header_is_incomplete(data: bytes) -> None:
    with pytest.raises(JobIncompleteError):
        parse_environment_file(data)


@pytest.mark.parametrize("data", [
    count(2) + b"A=1\0",  # one entry of two
    count(2) + b"A=1\0B=",  # the last entry has no NUL yet
    count(1),  # header only
])
def test_fewer_entries_than_the_header_says_is_incomplete(data: bytes) -> None:
    with pytest.raises(JobIncompleteError) as caught:
        parse_environment_file(data, job_id="7")
    assert caught.value.reason == "incomplete"
    assert caught.value.job_id == "7"


@pytest.mark.parametrize("data", [
    count(1) + b"A=1\0B=2\0",  # more entries than announced
    count(1) + b"A=1\0junk",  # bytes after the last announced entry
    count(0) + b"A=1\0",
    count(MAX_ENVIRONMENT_ENTRIES + 1) + b"A=1\0",  # an absurd header
    b"\xde\xad\xbe\xef" + b"x" * 64,
])
def test_contents_that_can_never_become_valid_are_malformed(data: bytes) -> None:
    with pytest.raises(SpoolReadError) as caught:
        parse_environment_file(data)
    assert not isinstance(caught.value, JobIncompleteError)
    assert caught.value.reason == "malformed"


@given(st.lists(st.binary(max_size=30).filter(lambda v: b"\0" not in v), min_size=1,
                max_size=10), st.data())
def test_every_proper_prefix_of_a_valid_file_is_incomplete(
    entries: list[bytes], data: st.DataObject
) -> None:
    """A file caught mid-write is retried, never rejected and never half-read."""
    whole = render_slurm_environment_file(entries)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    with pytest.raises(JobIncompleteError):
        parse_environment_file(whole[:cut])


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_spool_read_error(data: bytes) -> None:
    try:
        entries = parse_environment_file(data)
    except SpoolReadError:
        return
    assert all(b"\0" not in entry for entry in entries)


def test_script_is_complete_once_nul_terminated() -> None:
    assert script_complete((REAL_JOB / "script").read_bytes())
    assert script_complete(b"\0")
    assert not script_complete(b"#!/bin/sh\necho hi\n")
    assert not script_complete(b"")


def test_job_dir_is_hashed_by_last_digit() -> None:
    assert slurm_job_dir(Path("/state"), 4711) == Path("/state/hash.1/job.4711")


# --- reading a job directory ----------------------------------------------------------------

def test_reads_both_files_byte_for_byte_with_script_mtime_as_submit_time(job_dir: Path) -> None:
    raw = read_slurm_job(job_dir)
    assert raw == RawJob(
        scheduler=Scheduler.SLURM,
        job_id="18",
        submit_time_ms=SUBMIT_NS // 1_000_000,
        files=raw.files,
    )
    assert [(f.name, f.content) for f in raw.files] == [
        ("script", (REAL_JOB / "script").read_bytes()),
        ("environment", (REAL_JOB / "environment").read_bytes()),
    ]


def test_reads_a_5_mb_script_whole(job_dir: Path) -> None:
    big = b"#!/bin/sh\n" + bytes(range(1, 256)) * (5 * 1024 * 1024 // 255) + b"\0"
    (job_dir / "script").write_bytes(big)
    script = read_slurm_job(job_dir).file("script")
    assert script is not None
    assert script.content == big


@pytest.mark.parametrize("name", ["job.abc", "job.", "job.12x", "12", "hash.1"])
def test_a_directory_not_named_job_number_is_not_a_job(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    assert reason_of(tmp_path / name) == "not-a-job"


def test_a_regular_file_named_like_a_job_dir_is_not_a_job(tmp_path: Path) -> None:
    (tmp_path / "job.5").write_bytes(b"")
    assert reason_of(tmp_path / "job.5") == "not-a-job"


def test_a_vanished_job_directory_is_reported_as_vanished(tmp_path: Path) -> None:
    assert reason_of(tmp_path / "job.404") == "vanished"


def test_a_file_gone_with_its_directory_is_vanished_not_incomplete(job_dir: Path) -> None:
    with open_spool_dir(job_dir, "18") as dir_fd:
        shutil.rmtree(job_dir)
        with pytest.raises(SpoolReadError) as caught:
            read_spool_file(dir_fd, "script", "18")
    assert caught.value.reason == "vanished"


def test_a_missing_file_in_an_existing_directory_is_incomplete(job_dir: Path) -> None:
    (job_dir / "environment").unlink()
    with pytest.raises(JobIncompleteError):
        read_slurm_job(job_dir)


def test_a_script_without_its_nul_yet_is_incomplete(job_dir: Path) -> None:
    (job_dir / "script").write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(JobIncompleteError):
        read_slurm_job(job_dir)


def test_a_truncated_environment_is_incomplete(job_dir: Path) -> None:
    whole = (job_dir / "environment").read_bytes()
    (job_dir / "environment").write_bytes(whole[:-10])
    with pytest.raises(JobIncompleteError):
        read_slurm_job(job_dir)


@pytest.mark.parametrize("planted", ["script", "environment"])
def test_a_symlink_planted_in_the_job_directory_is_refused(job_dir: Path, planted: str,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes((job_dir / planted).read_bytes())
    (job_dir / planted).unlink()
    (job_dir / planted).symlink_to(target)
    assert reason_of(job_dir) == "symlink"


def test_a_symlinked_job_directory_is_refused(job_dir: Path, tmp_path: Path) -> None:
    link = tmp_path / "job.19"
    link.symlink_to(job_dir, target_is_directory=True)
    assert reason_of(link) == "symlink"


def test_a_fifo_planted_as_script_is_rejected_without_blocking(job_dir: Path) -> None:
    (job_dir / "script").unlink()
    os.mkfifo(job_dir / "script")
    assert reason_of(job_dir) == "malformed"


@pytest.fixture
def world_traversable_job() -> Iterator[Path]:
    """job.18 under a fresh /tmp directory another user can traverse (tmp_path cannot)."""
    top = Path(tempfile.mkdtemp(prefix="sarchive-perm-"))
    try:
        top.chmod(0o755)
        job = top / "job.18"
        shutil.copytree(REAL_JOB, job)
        job.chmod(0o755)
        for f in job.iterdir():
            f.chmod(0o644)
        yield job
    finally:
        shutil.rmtree(top)


def read_as_nobody(job_dir: Path) -> str:
    """read_slurm_job in a forked child that dropped root: the reason, or 'ok'.

    We run as root, which bypasses file modes, so an EACCES can only be provoked from an
    unprivileged process; the forked child already has the code loaded (nobody cannot exec
    the venv's interpreter, which lives under /root).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        outcome = b"crash"
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            try:
                read_slurm_job(job_dir)
                outcome = b"ok"
            except SpoolReadError as exc:
                outcome = exc.reason.encode()
        finally:
            os.write(write_end, outcome)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read().decode()
    os.waitpid(pid, 0)
    return reported


def test_an_unprivileged_reader_can_read_a_readable_job(world_traversable_job: Path) -> None:
    """Control for the permission tests below: the set-up itself lets nobody read."""
    assert read_as_nobody(world_traversable_job) == "ok"


def test_an_unreadable_file_is_reported_as_permission(world_traversable_job: Path) -> None:
    (world_traversable_job / "environment").chmod(0o600)
    assert read_as_nobody(world_traversable_job) == "permission"


def test_an_unreadable_job_directory_is_reported_as_permission(
    world_traversable_job: Path,
) -> None:
    world_traversable_job.chmod(0o700)
    assert stat.S_IMODE(world_traversable_job.stat().st_mode) == 0o700
    assert read_as_nobody(world_traversable_job) == "permission"
