"""Grid Engine's classic spool: the qmaster spool directory's `jobs/` tree and `job_scripts/`.

What sge_qmaster (8.1, `spooling_method classic`) keeps of a job:
- `job_scripts/<id>`: the script, byte for byte as submitted, written in one write() and
  closed before the job's record appears. A binary job (`qsub -b y`) has none: its command is
  in the record.
- the job record, at `jobs/<10-digit id split 2/4/4>`: `jobs/00/0000/0011` for job 11. It is
  written as `.0011` beside it and renamed into place, so a record that exists is complete;
  its rename is the "job submitted" signal. An array job (and a tightly integrated parallel
  job) is a directory `0011/` instead, holding the record as `common` (also written as
  `.common` and renamed) and its tasks' own files in subdirectories. The qmaster rewrites the
  record (renames again) on every state change of the job, creates the `00/` and `0000/`
  levels lazily (a new one every 10,000 ids) and removes them again when they empty.
- `qdel` of a pending job removes the record and the script; so does the end of a job.
Everything is 0644 (directories 0755). The record is a packed CULL element, decoded by
producer.gridengine_record.

A job is named in the producer by its record's path, `jobs/00/0000/0011`, whatever its form
(file or directory); its submit time is the record's own (JB_submission_time), so a job id
reused after a reinstall (ids restart at 1) is another job. Reading goes through
producer.spool_io (no symlink followed, each file read once); the rest is pure.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

from producer.cull import Span
from producer.environment import FilteredEnvironment, entry_key
from producer.errors import REASON_MALFORMED, REASON_NOT_A_JOB, SpoolReadError
from producer.gridengine_record import GridEngineJob, TaskRange, parse_job_record
from producer.spool_io import RawJob, open_spool_dir, read_spool_file, spool_error
from schemas.model import REDACTED_MARKER, Scheduler, SpoolFile

JOBS_DIR = "jobs"
SCRIPTS_DIR = "job_scripts"
COMMON_FILE = "common"  # an array job's record, in its directory
# The names the event's spool files carry: the script as job_scripts/ holds it, and the record.
SCRIPT_SPOOL_FILE = "script"
RECORD_SPOOL_FILE = "record"

_ID_DIGITS = 10
_TOP = re.compile(r"^\d{2}$")  # jobs/00
_MIDDLE = re.compile(r"^\d{4}$")  # jobs/00/0000, and the job's own 0011
_MIDDLE_PATH = re.compile(r"^jobs/\d{2}$")
_LEAF_PATH = re.compile(r"^jobs/\d{2}/\d{4}$")
_JOB_PATH = re.compile(r"^jobs/(\d{2})/(\d{4})/(\d{4})$")
_SCRIPT_NAME = re.compile(r"^[1-9]\d{0,9}$")


def record_path(job_id: int) -> str:
    """The record's path below the qmaster spool: 11 -> 'jobs/00/0000/0011'."""
    digits = f"{job_id:0{_ID_DIGITS}d}"
    if len(digits) != _ID_DIGITS:
        raise ValueError(f"{job_id} is not a Grid Engine job id")
    return f"{JOBS_DIR}/{digits[:2]}/{digits[2:6]}/{digits[6:]}"


def job_id_of(record: str) -> str | None:
    """The job id a record path names ('jobs/00/0000/0011' -> '11'); None for other paths."""
    match = _JOB_PATH.match(record)
    if match is None:
        return None
    return str(int("".join(match.groups())))


def script_job_id(name: str) -> int | None:
    """The job id of a `job_scripts/` entry; None for anything else."""
    return int(name) if _SCRIPT_NAME.match(name) else None


def is_jobs_level(relative: str, name: str) -> bool:
    """Whether `name` in the spool directory `relative` is a level of the jobs/ tree that
    holds records deeper down (jobs/, jobs/00/, jobs/00/0000/)."""
    if relative == ".":
        return name == JOBS_DIR
    if relative == JOBS_DIR:
        return _TOP.match(name) is not None
    return _MIDDLE_PATH.match(relative) is not None and _MIDDLE.match(name) is not None


def is_record_entry(relative: str, name: str) -> bool:
    """Whether `name` in `relative` is a job's record (a file, or an array job's directory);
    the records' temporary `.0011` names are not."""
    return _LEAF_PATH.match(relative) is not None and _MIDDLE.match(name) is not None


def spool_root(leaf: Path) -> Path:
    """The qmaster spool directory of a record's directory (jobs/00/0000 -> the spool)."""
    return leaf.parents[2]


def _record(leaf_fd: int, name: str, job_id: str) -> bytes:
    """The record's bytes: the file, or an array job's `common` (JobIncompleteError while
    its directory holds none yet)."""
    try:
        info = os.stat(name, dir_fd=leaf_fd, follow_symlinks=False)
    except OSError as exc:
        # A record appears by a rename: once detected, its absence means it was removed.
        raise spool_error(exc, job_id, f"record {name}") from exc
    if stat.S_ISDIR(info.st_mode):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=leaf_fd)
        except OSError as exc:
            raise spool_error(exc, job_id, f"directory {name}") from exc
        try:
            return read_spool_file(fd, COMMON_FILE, job_id).content
        finally:
            os.close(fd)
    return read_spool_file(leaf_fd, name, job_id).content


def read_record(leaf: Path, name: str) -> tuple[str, bytes]:
    """The job id and the record bytes of the job `name` ('0011') in `leaf` (jobs/00/0000)."""
    job_id = job_id_of(f"{JOBS_DIR}/{leaf.parent.name}/{leaf.name}/{name}")
    if job_id is None or leaf.parent.parent.name != JOBS_DIR:
        raise SpoolReadError(name, REASON_NOT_A_JOB,
                             f"{leaf / name} is not a Grid Engine job record path")
    with open_spool_dir(leaf, job_id) as leaf_fd:
        return job_id, _record(leaf_fd, name, job_id)


def record_submit_time_ms(leaf: Path, name: str) -> int | None:
    """The submit time the job's record holds now; None when it cannot be read or decoded."""
    try:
        job_id, record = read_record(leaf, name)
        return parse_job_record(record, job_id=job_id).submit_time_ms
    except (SpoolReadError, OSError):
        return None


def script_second_ms(leaf: Path, name: str) -> int | None:
    """The second in which the job's script was written, in ms: the qmaster stamps a
    submission in whole seconds and writes the script within milliseconds, so this is the
    record's submit time but for a submission that straddles a second. One lstat, where the
    record's own takes decoding it; None without a script (a binary job) or a job path."""
    job_id = job_id_of(f"{JOBS_DIR}/{leaf.parent.name}/{leaf.name}/{name}")
    if job_id is None:
        return None
    try:
        mtime_ns = os.lstat(spool_root(leaf) / SCRIPTS_DIR / job_id).st_mtime_ns
    except OSError:
        return None
    return mtime_ns // 1_000_000_000 * 1000


def record_removed(leaf: Path, name: str) -> bool:
    """Whether the job's record is gone from the spool: a record file appears whole, by a
    rename, so its absence is a removal. An array job's directory still without `common` is
    not: it may be a job on its way in."""
    return not os.path.lexists(leaf / name)


def check_record(job: GridEngineJob, job_id: str) -> None:
    """The record must be the job its path names."""
    if str(job.job_id) != job_id:
        raise SpoolReadError(job_id, REASON_MALFORMED,
                             f"the record at job {job_id}'s path holds job {job.job_id}")


def read_gridengine_job(leaf: Path, name: str) -> RawJob:
    """Read job `name` ('0011') of `leaf` (the spool's jobs/00/0000): its record, then its
    script from job_scripts/ (a binary job has none).

    The record is read first: it is renamed into place after the script was closed, so a
    record that exists means a complete script. A script missing beside a record that needs
    one is incomplete (the qmaster removes both when a job is deleted: the record's removal
    then reports the job gone).
    """
    job_id, record = read_record(leaf, name)
    job = parse_job_record(record, job_id=job_id)
    check_record(job, job_id)
    files = [SpoolFile(RECORD_SPOOL_FILE, record)]
    if not job.binary:
        with open_spool_dir(spool_root(leaf) / SCRIPTS_DIR, job_id) as scripts_fd:
            script = read_spool_file(scripts_fd, job_id, job_id).content
        files.insert(0, SpoolFile(SCRIPT_SPOOL_FILE, script))
    return RawJob(
        scheduler=Scheduler.GRIDENGINE,
        job_id=job_id,
        submit_time_ms=job.submit_time_ms,
        files=tuple(files),
        gridengine_job=job,
    )


def environment_entries(job: GridEngineJob) -> tuple[bytes, ...]:
    """The record's environment list as KEY=VALUE entries, the form every scheduler's
    environment takes in the producer (producer.environment)."""
    return tuple(name + b"=" + value for name, value in job.environment)


def task_range(tasks: TaskRange) -> str:
    """An id range as qsub's -t and -pe take it: '1-50', '1-50:2', '4'."""
    if tasks.start == tasks.end:
        return str(tasks.start)
    step = f":{tasks.step}" if tasks.step > 1 else ""
    return f"{tasks.start}-{tasks.end}{step}"


def command_line(job: GridEngineJob) -> bytes:
    """A binary job's command and its arguments, space-separated as qsub took them: what the
    event carries as the script of a job that has none."""
    return b" ".join(job.command)


def _packed_entry(entry: bytes | None) -> tuple[bytes, bytes]:
    """The name and value an entry of the record is given: its filtered KEY=VALUE, or for an
    entry the policy dropped (None) the marker for both (a packed list cannot lose an element
    without being packed again)."""
    if entry is None:
        return REDACTED_MARKER, REDACTED_MARKER
    key, _, value = entry.partition(b"=")
    return key, value


@dataclasses.dataclass(frozen=True, slots=True)
class RecordWithheld:
    """A record that is not carried: masking it could not be verified. The reason names
    fields, never a value (it is logged)."""

    reason: str


def render_record(record: bytes, job: GridEngineJob,
                  environment: FilteredEnvironment) -> bytes | RecordWithheld:
    """The record as stored, with the environment entries the policy hid masked in place;
    RecordWithheld when that cannot be verified (the record is then not carried).

    `job` is the record's own decoding: its environment spans say where each entry's name and
    value lie in `record`. Only those bytes are rewritten, back to front so that the offsets
    still to be used stay valid; every NUL terminator and every other field stays as it was,
    whatever bytes the entry shares with them. The result is decoded again and must hold the
    filtered environment with every other field unchanged; when it does not (a record the
    decoder cannot read back), RecordWithheld: never a record with a secret, nor a damaged one.
    """
    if not environment.hidden_keys:
        return record
    kept_keys = set(environment.keys)
    kept = iter(environment.entries)
    expected: list[tuple[bytes, bytes]] = []
    rewrites: list[tuple[Span, bytes]] = []
    for (name, value), spans, entry in zip(job.environment, job.environment_spans,
                                           environment_entries(job), strict=True):
        # The policy keeps or drops every entry of a key, in order: `kept` follows along.
        filtered = next(kept) if entry_key(entry) in kept_keys else None
        if filtered == entry:
            expected.append((name, value))
            continue
        pair = _packed_entry(filtered)
        rewrites.extend(zip(spans, pair, strict=True))
        expected.append(pair)
    masked = bytearray(record)
    for span, text in sorted(rewrites, key=lambda rewrite: rewrite[0], reverse=True):
        masked[span.start:span.end] = text
    rendered = bytes(masked)
    try:
        decoded = parse_job_record(rendered, job_id=str(job.job_id))
    except SpoolReadError:
        # Not the decoder's detail: misaligned, it may quote bytes of a value not masked.
        return RecordWithheld("the masked record does not decode")
    if decoded.environment != tuple(expected):
        return RecordWithheld("the masked record's environment is not the filtered one")
    changed = [field.name for field in dataclasses.fields(job) if field.compare
               and field.name != "environment"
               and getattr(decoded, field.name) != getattr(job, field.name)]
    if changed:
        return RecordWithheld(f"masking the environment would change {', '.join(changed)}")
    return rendered
