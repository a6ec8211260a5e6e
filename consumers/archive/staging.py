"""How a file is written before it gets its final name: the two staging strategies.

UnnamedStaging writes to a file without a name in the target directory (an O_TMPFILE inode)
and names it with link(2) of /proc/self/fd/<fd>. It is the cheaper way (per file one
directory entry made, instead of a temporary one made and removed beside it, and no lock),
and a crash leaves nothing behind: the kernel frees an inode that was never linked.

NamedStaging is the fallback where O_TMPFILE is refused (EOPNOTSUPP, EISDIR, EINVAL: NFS and
other file systems without it, old kernels) or /proc/self/fd cannot name the file: a named
temporary file `.sarchive-tmp-<random>` (O_CREAT|O_EXCL, flock-ed while open, so that the
start-up sweep of consumers.archive.archive_root tells a live writer's from a dead one's),
linked to its final name and its temporary name removed. Every named temporary file is made
in one staging directory, STAGING_DIRECTORY at the archive root, and linked from there into
its target directory (link(2) works across directories of one file system): what a crash
leaves is all in that one directory, so the start-up sweep lists it alone, however large the
archive. Its name starts with TEMP_PREFIX, which no layout path may, so no job's path can
ever lead into it.

Both link with link(2), which unlike rename(2) never replaces an existing file: the caller
compares a file that appeared meanwhile instead of overwriting it.
"""

from __future__ import annotations

import contextlib
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
STAGING_DIRECTORY = TEMP_PREFIX + "staging"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
    temp_dir_fd: int | None = None  # the staging directory, where temp_name is
    temp_removed: bool = False

    def descriptor(self) -> int:
        assert self.fd is not None  # set when the file was opened
        return self.fd


def open_staging_directory(root_fd: int, dir_mode: int | None) -> int | None:
    """The staging directory's descriptor; dir_mode None: None where it does not exist,
    otherwise it is made with that mode. Its entries need no fsync: a temporary file is
    durable through the name it is linked to, and one that a crash lost needs no sweep."""
    try:
        return os.open(STAGING_DIRECTORY, _DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        if dir_mode is None:
            return None
    with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
        os.mkdir(STAGING_DIRECTORY, dir_mode, dir_fd=root_fd)
    fd = os.open(STAGING_DIRECTORY, _DIR_FLAGS, dir_fd=root_fd)
    os.fchmod(fd, dir_mode)
    return fd


class StagingArea:
    """One session's staging directory, opened (and made if missing) at its first named
    temporary file; close() closes it, not the root."""

    def __init__(self, root_fd: int, dir_mode: int) -> None:
        self.root_fd = root_fd
        self.dir_mode = dir_mode
        self._fd: int | None = None

    def descriptor(self) -> int:
        if self._fd is None:
            self._fd = open_staging_directory(self.root_fd, self.dir_mode)
            assert self._fd is not None  # made if missing
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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

    def open(self, dir_fd: int, staged: StagedFile, area: StagingArea) -> None:
        """A file without a name in dir_fd itself (area: not needed)."""
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
    """Named temporary files in the staging directory, flock-ed while open."""

    def __init__(self, file_mode: int) -> None:
        self.file_mode = file_mode

    def open(self, dir_fd: int, staged: StagedFile, area: StagingArea) -> None:
        """A temporary file in the area's staging directory, for dir_fd (linked by link)."""
        staging_fd = area.descriptor()
        name = TEMP_PREFIX + secrets.token_hex(8)
        staged.fd = os.open(name, _CREATE_FLAGS, self.file_mode, dir_fd=staging_fd)
        staged.staging = self
        # Only once it is ours: a failure must not remove another's.
        staged.temp_name, staged.temp_dir_fd = name, staging_fd
        fcntl.flock(staged.fd, fcntl.LOCK_EX)  # marks it live for a concurrent sweep

    def link(self, dir_fd: int, staged: StagedFile) -> None:
        """EXDEV where dir_fd is on another file system than the staging directory."""
        assert staged.temp_name is not None  # set by open
        os.link(staged.temp_name, staged.final.name, src_dir_fd=staged.temp_dir_fd,
                dst_dir_fd=dir_fd, follow_symlinks=False)


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
