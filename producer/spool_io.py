"""Spool file I/O shared by the Slurm, Torque and Grid Engine readers: the thin edge to the
file system.

Every file is opened relative to its job's directory with O_NOFOLLOW (a symlink planted in the
spool is refused, never followed) and read exactly once; an OSError becomes the per-job
SpoolReadError that names what went wrong.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from producer.gridengine_record import GridEngineJob

READ_CHUNK_BYTES = 1 << 20


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
    # Grid Engine: the record, decoded once by the reader (it checks it anyway); derived from
    # `files` like environment_entries.
    gridengine_job: GridEngineJob | None = field(default=None, compare=False, repr=False)

    def file(self, name: str) -> SpoolFile | None:
        return next((f for f in self.files if f.name == name), None)


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
        while chunk := os.read(fd, READ_CHUNK_BYTES):
            chunks.append(chunk)
        return SpoolRead(b"".join(chunks), info.st_mtime_ns // 1_000_000)
    except OSError as exc:
        raise spool_error(exc, job_id, name) from exc
    finally:
        os.close(fd)
