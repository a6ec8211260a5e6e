"""Directories and files below the archive root, reached without following any symlink.

Every path is walked from the root one component at a time with directory file descriptors
(openat semantics) and O_NOFOLLOW, so a symlink inside the archive is never followed and
nothing is ever read or written outside the root. Within one batch the leaf directories
walked are kept open, at most DIR_CACHE_SIZE of them (the least recently used is closed
first), so that the batch's reads and writes do not walk the same chain again for every file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import OrderedDict

from consumers.archive.errors import UnsafeArchiveEntryError, io_error
from schemas.archive_layout import ArchivePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ_CHUNK = 1 << 20
# Leaf directories a batch keeps open (see consumers.archive.writer for the descriptor budget).
DIR_CACHE_SIZE = 64

Directory = tuple[str, ...]


class SafeTree:
    """One batch's walks below the root: the root's descriptor (which it owns and closes)
    and the cache of leaf directories, all closed by close()."""

    def __init__(self, root_fd: int, dir_mode: int) -> None:
        self.root_fd = root_fd
        self._dir_mode = dir_mode
        self._dirs: OrderedDict[Directory, int] = OrderedDict()

    def close(self) -> None:
        fds = [*self._dirs.values(), self.root_fd]
        self._dirs.clear()
        for fd in fds:
            os.close(fd)

    def directory(self, components: Directory, created: set[Directory] | None) -> int | None:
        """The directory's descriptor, from the cache or walked from the root. It stays open
        until the batch ends or DIR_CACHE_SIZE other directories are asked for: use it
        before asking for another.

        created None: None for a missing directory. Otherwise missing directories are made
        with the directory mode, and each parent that gained one is added to created.
        """
        if not components:
            return self.root_fd
        fd = self._dirs.get(components)
        if fd is not None:
            self._dirs.move_to_end(components)
            return fd
        fd = self._walk(components, created)
        if fd is not None:
            self._dirs[components] = fd
            if len(self._dirs) > DIR_CACHE_SIZE:
                os.close(self._dirs.popitem(last=False)[1])
        return fd

    def _walk(self, components: Directory, created: set[Directory] | None) -> int | None:
        """The directory's descriptor, walked from the root (see directory); the caller
        owns it."""
        opened: list[int] = []
        try:
            fd = self.root_fd
            for depth, name in enumerate(components, start=1):
                key = components[:depth]
                child = _open_dir(fd, name, key)
                if child is None:
                    if created is None:
                        return None
                    child = self._make_dir(fd, name, key)
                    created.add(key[:-1])
                opened.append(child)
                fd = child
            opened.pop()  # the leaf is the caller's
            return fd
        except OSError as exc:
            raise io_error(exc, f"directory {'/'.join(components)}") from exc
        finally:
            for fd in opened:
                os.close(fd)

    def _make_dir(self, parent_fd: int, name: str, key: Directory) -> int:
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            os.mkdir(name, self._dir_mode, dir_fd=parent_fd)
        fd = _open_dir(parent_fd, name, key)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, "removed right after mkdir", "/".join(key))
        os.fchmod(fd, self._dir_mode)
        return fd


def _open_dir(parent_fd: int, name: str, key: Directory) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeArchiveEntryError(
                f"{'/'.join(key)} is a symlink or not a directory") from exc
        raise


def read_file(dir_fd: int, path: ArchivePath) -> bytes | None:
    """The bytes of the file path.name in the directory, or None if it does not exist.

    Raises UnsafeArchiveEntryError for a symlink or a non-regular file, ArchiveIOError when
    the file system fails.
    """
    try:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise UnsafeArchiveEntryError(f"{path} is a symlink") from exc
        raise io_error(exc, f"reading {path}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeArchiveEntryError(f"{path} is not a regular file")
        chunks: list[bytes] = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise io_error(exc, f"reading {path}") from exc
    finally:
        os.close(fd)
