"""What the archive's file system adapters raise: the sink turns these into a dead letter
(an unsafe entry) or a retry of the whole batch (an I/O error)."""

from __future__ import annotations

import errno


class ArchiveIOError(Exception):
    """The archive cannot be read or written right now (disk full, permission denied,
    read-only file system, I/O error, a concurrent writer): retry later, commit nothing."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def code_name(self) -> str:
        return errno.errorcode.get(self.code, "unknown") if self.code is not None else "unknown"


class UnsafeArchiveEntryError(Exception):
    """A symlink or a non-directory sits where the archive needs a directory or a file."""


def io_error(exc: OSError, what: str) -> ArchiveIOError:
    return ArchiveIOError(f"{what}: {exc.strerror or exc}", exc.errno)
