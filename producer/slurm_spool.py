"""Slurm's spool: StateSaveLocation/hash.<id % 10>/job.<id>/{environment,script}.

What slurmctld 22.05 writes at submission (src/slurmctld/job_mgr.c, _copy_job_desc_to_file),
confirmed on a real spool:
- `environment` first: a 4-byte entry count in host byte order (write(fd, &count, 4), NOT
  Slurm's big-endian pack32), then every entry KEY=VALUE followed by one NUL. A value may hold
  '=' and newlines; nothing stops it holding non-UTF-8 bytes.
- `script` second: the script followed by one NUL (strlen + 1 bytes). sbatch refuses scripts
  containing NUL, so the first NUL is the terminator and a script ending in NUL is complete.
One directory per job; a job array keeps one directory, job.<array job id>, for all its tasks.

The readers here are the thin I/O edge: each file is opened relative to the job directory with
O_NOFOLLOW (a symlink planted in the spool is refused, never followed) and read exactly once;
everything else is pure.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from producer.environment import SLURM_ENV_COUNT
from producer.errors import (
    REASON_IO,
    REASON_MALFORMED,
    REASON_NOT_A_JOB,
    REASON_PERMISSION,
    REASON_SYMLINK,
    REASON_VANISHED,
    JobIncompleteError,
    SpoolReadError,
)
from schemas.model import Scheduler, SpoolFile

SLURM_JOB_DIR = re.compile(r"^job\.(\d+)$")
SLURM_HASH_DIR = re.compile(r"^hash\.(\d)$")
SCRIPT_FILE = "script"
ENVIRONMENT_FILE = "environment"

# No real submission comes near this; a larger count header is garbage, not a slow writer.
MAX_ENVIRONMENT_ENTRIES = 1 << 20

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class RawJob:
    """What was read from the spool: every file's bytes as stored, plus the job's identity."""

    scheduler: Scheduler
    job_id: str
    submit_time_ms: int
    files: tuple[SpoolFile, ...]
    # Slurm: the environment file's entries, parsed once by the reader (it checks them for
    # completeness anyway); None to parse them from `files`. Derived from `files`, so not
    # part of equality.
    environment_entries: Sequence[bytes] | None = field(default=None, compare=False,
                                                        repr=False)

    def file(self, name: str) -> SpoolFile | None:
        return next((f for f in self.files if f.name == name), None)


def slurm_job_dir(state_dir: Path, job_id: int) -> Path:
    """Where slurmctld keeps the spool files of a job (or of a whole job array)."""
    return state_dir / f"hash.{job_id % 10}" / f"job.{job_id}"


def parse_environment_file(data: bytes, *, job_id: str = "?") -> list[bytes]:
    """Slurm's environment file -> its entries (KEY=VALUE bytes, without the NULs).

    Raises JobIncompleteError while the file is still shorter than its count header says, and
    SpoolReadError("malformed") for contents no amount of further writing can make valid.
    """
    if len(data) < SLURM_ENV_COUNT.size:
        raise JobIncompleteError(
            job_id, f"environment file has {len(data)} bytes, less than its count header"
        )
    (count,) = SLURM_ENV_COUNT.unpack_from(data)
    if count > MAX_ENVIRONMENT_ENTRIES:
        raise SpoolReadError(
            job_id, REASON_MALFORMED, f"environment count header says {count} entries"
        )
    *entries, tail = data[SLURM_ENV_COUNT.size:].split(b"\0")
    if len(entries) > count or (len(entries) == count and tail):
        raise SpoolReadError(
            job_id,
            REASON_MALFORMED,
            f"environment file holds more than the {count} entries its header announces",
        )
    if len(entries) < count:
        raise JobIncompleteError(
            job_id, f"environment file holds {len(entries)} of {count} entries"
        )
    return entries


def script_complete(data: bytes) -> bool:
    """Slurm terminates the stored script with a NUL, written last."""
    return data.endswith(b"\0")


def spool_error(exc: OSError, job_id: str, what: str) -> SpoolReadError:
    """The per-job error for an OSError met while reading a spool path."""
    if exc.errno == errno.ENOENT:
        return SpoolReadError(job_id, REASON_VANISHED, f"{what} is gone")
    if exc.errno == errno.ELOOP:
        return SpoolReadError(job_id, REASON_SYMLINK, f"{what} is a symlink, refused")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SpoolReadError(job_id, REASON_PERMISSION, f"{what}: {exc.strerror}")
    if exc.errno == errno.ENOTDIR:
        return SpoolReadError(job_id, REASON_NOT_A_JOB, f"{what} is not a directory")
    return SpoolReadError(job_id, REASON_IO, f"{what}: {exc.strerror or exc}")


@contextmanager
def open_spool_dir(path: Path, job_id: str) -> Iterator[int]:
    """A file descriptor of a job's spool directory, opened without following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and path.is_symlink():
            # O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR, not ELOOP.
            raise SpoolReadError(
                job_id, REASON_SYMLINK, f"directory {path} is a symlink, refused"
            ) from exc
        raise spool_error(exc, job_id, f"directory {path}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _directory_removed(dir_fd: int) -> bool:
    try:
        return os.fstat(dir_fd).st_nlink == 0
    except OSError:
        return True


@dataclass(frozen=True)
class SpoolRead:
    content: bytes
    mtime_ms: int


def read_spool_file(dir_fd: int, name: str, job_id: str) -> SpoolRead:
    """Read one spool file once, relative to dir_fd, refusing symlinks and non-regular files.

    A missing file is JobIncompleteError while its directory still exists (the scheduler has
    not written it yet) and SpoolReadError("vanished") once the directory was removed.
    """
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ENOENT and not _directory_removed(dir_fd):
            raise JobIncompleteError(job_id, f"{name} does not exist yet") from exc
        raise spool_error(exc, job_id, name) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or device planted in the spool would block or never end.
            raise SpoolReadError(job_id, REASON_MALFORMED, f"{name} is not a regular file")
        chunks: list[bytes] = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return SpoolRead(b"".join(chunks), info.st_mtime_ns // 1_000_000)
    except OSError as exc:
        raise spool_error(exc, job_id, name) from exc
    finally:
        os.close(fd)


def read_slurm_job(job_dir: Path) -> RawJob:
    """Read job.<id>/script and job.<id>/environment; the submit time is the script's mtime."""
    match = SLURM_JOB_DIR.match(job_dir.name)
    if match is None:
        raise SpoolReadError(
            job_dir.name, REASON_NOT_A_JOB, f"{job_dir} is not named job.<number>"
        )
    job_id = match.group(1)
    with open_spool_dir(job_dir, job_id) as dir_fd:
        # The script is written after the environment, so a complete script means the
        # environment file was complete before it.
        script = read_spool_file(dir_fd, SCRIPT_FILE, job_id)
        if not script_complete(script.content):
            raise JobIncompleteError(job_id, "script is not NUL-terminated yet")
        environment = read_spool_file(dir_fd, ENVIRONMENT_FILE, job_id)
    entries = parse_environment_file(environment.content, job_id=job_id)
    return RawJob(
        scheduler=Scheduler.SLURM,
        job_id=job_id,
        submit_time_ms=script.mtime_ms,
        files=(
            SpoolFile(SCRIPT_FILE, script.content),
            SpoolFile(ENVIRONMENT_FILE, environment.content),
        ),
        environment_entries=entries,
    )
