"""The archive root: opened, checked at start-up, and swept of the temporary files a crashed
writer left behind (consumers.archive.staging.NamedStaging: flock-ed while their writer lives,
all in the staging directory).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from consumers.archive.errors import io_error
from consumers.archive.staging import STAGING_DIRECTORY, open_staging_directory
from schemas.archive_layout import TEMP_PREFIX


def open_root(root: Path) -> int:
    """A descriptor of the root directory, the base of every walk below it."""
    # The root itself may be a symlink (an operator's choice); nothing below it may.
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise io_error(exc, f"archive root {root}") from exc


def check_root(root: Path) -> None:
    """Raise ArchiveIOError unless the root is a directory we can open."""
    os.close(open_root(root))


def sweep_temporary_files(root: Path,
                          list_directory: Callable[[int], list[str]] = os.listdir) -> int:
    """Remove temporary files left by a crashed writer; return how many were removed.

    Named temporary files are only ever made in the staging directory, so it is the one
    directory listed (list_directory, a seam for tests): the sweep takes time in the number
    of temporary files, not in the size of the archive. A temporary file whose flock is held
    belongs to a live writer (another consumer sharing the archive) and is left alone.
    """
    root_fd = open_root(root)
    try:
        staging_fd = open_staging_directory(root_fd, None)
        if staging_fd is None:
            return 0
        try:
            return sum(1 for name in list_directory(staging_fd)
                       if name.startswith(TEMP_PREFIX) and _remove_if_abandoned(staging_fd, name))
        finally:
            os.close(staging_fd)
    except OSError as exc:
        raise io_error(exc, f"sweeping {root / STAGING_DIRECTORY}") from exc
    finally:
        os.close(root_fd)


def _remove_if_abandoned(dir_fd: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return False  # gone already, or a symlink: not one of ours
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(fd)
