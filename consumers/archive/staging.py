"""How a file is written before it gets its final name: the two staging strategies.

UnnamedStaging writes to a file without a name in the target directory (an O_TMPFILE inode)
and names it with link(2) of /proc/self/fd/<fd>. It is the cheaper way (per file one
directory entry made, instead of a temporary one made and removed beside it, and no lock),
and a crash leaves nothing behind: the kernel frees an inode that was never linked.

NamedStaging is the fallback where O_TMPFILE is refused (EOPNOTSUPP, EISDIR, EINVAL: NFS and
other file systems without it, old kernels) or /proc/self/fd cannot name the file: a named
temporary file `.sarchive-tmp-<random>` (O_CREAT|O_EXCL, flock-ed while open, so that the
start-up sweep of consumers.archive.archive_root tells a live writer's from a dead one's),
linked to its final name and its temporary name removed.

Both link with link(2), which unlike rename(2) never replaces an existing file: the caller
compares a file that appeared meanwhile instead of overwriting it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from dataclasses import dataclass

from schemas.archive_layout import TEMP_PREFIX, ArchivePath

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A file without a name, to be linked later (so not O_EXCL, which would forbid that); None
# where the os module does not know O_TMPFILE.
TMPFILE_FLAGS = (os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC) if hasattr(os, "O_TMPFILE") \
    else None
# What open(2) says where O_TMPFILE is not supported: by the file system (EOPNOTSUPP), by
# a kernel older than 3.11 (EISDIR, from the O_DIRECTORY bit in O_TMPFILE), or otherwise.
_TMPFILE_REFUSED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
PROC_FD_DIR = "/proc/self/fd"


class StagingRefusedError(Exception):
    """This directory or /proc cannot serve files without a name: use NamedStaging."""


@dataclass
class StagedFile:
    """A file of a round, written (or being written) by its staging and awaiting its final
    name; whatever fails, the round closes fd and removes temp_name unless temp_removed."""

    final: ArchivePath
    content: bytes
    fd: int | None = None
    staging: Staging | None = None  # the strategy that opened it, and links it
    temp_name: str | None = None  # None: a file without a name
    temp_removed: bool = False

    def descriptor(self) -> int:
        assert self.fd is not None  # set when the file was opened
        return self.fd


class UnnamedStaging:
    """O_TMPFILE files, named through /proc/self/fd. flags and proc_fd_dir are seams for
    tests: O_WRONLY|O_DIRECTORY is what a kernel without O_TMPFILE sees, and refuses; any
    other directory than /proc/self/fd makes link(2) fail with ENOENT, as when /proc is not
    mounted."""

    def __init__(self, file_mode: int, flags: int, proc_fd_dir: str) -> None:
        self.file_mode = file_mode
        self.flags = flags
        self.proc_fd_dir = proc_fd_dir

    def works_in(self, dir_fd: int) -> bool:
        """Whether the directory takes files without a name and /proc/self/fd names them."""
        try:
            fd = self._open(dir_fd)
        except StagingRefusedError:
            return False
        try:
            return self._proc_names(fd)
        finally:
            os.close(fd)

    def open(self, dir_fd: int, staged: StagedFile) -> None:
        staged.fd = self._open(dir_fd)
        staged.staging = self

    def _open(self, dir_fd: int) -> int:
        try:
            return os.open(".", self.flags, self.file_mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _TMPFILE_REFUSED:
                raise StagingRefusedError(f"O_TMPFILE refused: {exc.strerror}") from exc
            raise

    def link(self, dir_fd: int, staged: StagedFile) -> None:
        fd = staged.descriptor()
        try:
            os.link(self._proc_path(fd), staged.final.name, dst_dir_fd=dir_fd,
                    follow_symlinks=True)
        except FileNotFoundError as exc:
            if self._proc_names(fd):
                raise  # /proc names it: the directory itself is gone
            raise StagingRefusedError(f"{self.proc_fd_dir} cannot name the file") from exc

    def _proc_path(self, fd: int) -> str:
        return f"{self.proc_fd_dir}/{fd}"

    def _proc_names(self, fd: int) -> bool:
        """Whether /proc/self/fd/<fd> reaches the open file (it does unless /proc is missing
        or hidden)."""
        try:
            os.stat(self._proc_path(fd))
        except OSError:
            return False
        return True


class NamedStaging:
    """Named temporary files beside the final name, flock-ed while open."""

    def __init__(self, file_mode: int) -> None:
        self.file_mode = file_mode

    def open(self, dir_fd: int, staged: StagedFile) -> None:
        name = TEMP_PREFIX + secrets.token_hex(8)
        staged.fd = os.open(name, _CREATE_FLAGS, self.file_mode, dir_fd=dir_fd)
        staged.staging = self
        staged.temp_name = name  # only once it is ours: a failure must not remove another's
        fcntl.flock(staged.fd, fcntl.LOCK_EX)  # marks it live for a concurrent sweep

    def link(self, dir_fd: int, staged: StagedFile) -> None:
        assert staged.temp_name is not None  # set by open
        os.link(staged.temp_name, staged.final.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                follow_symlinks=False)


Staging = UnnamedStaging | NamedStaging


def choose_staging(dir_fd: int, file_mode: int, tmpfile_flags: int | None,
                   proc_fd_dir: str) -> Staging:
    """UnnamedStaging where it works in the directory (tmpfile_flags None: never try it),
    NamedStaging otherwise."""
    if tmpfile_flags is not None:
        unnamed = UnnamedStaging(file_mode, tmpfile_flags, proc_fd_dir)
        if unnamed.works_in(dir_fd):
            return unnamed
    return NamedStaging(file_mode)
