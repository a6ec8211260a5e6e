"""The archive's file system adapter: durable, no-overwrite writes below one root.

Every path is walked from the archive root one component at a time with directory file
descriptors (openat semantics) and O_NOFOLLOW, so a symlink inside the archive is never
followed and nothing is ever written outside the root.

A batch of files is made durable directory by directory, so that one directory fsync covers
every job of the batch stored there; within a directory, in rounds of up to MAX_OPEN_FILES:
1. each file is written to a temporary `.sarchive-tmp-<random>` file in the directory
   (O_CREAT|O_EXCL, mode set with fchmod so the umask does not matter, flock-ed while open);
2. every temporary file of the round is fsynced;
3. each is linked to its final name and the temporary name removed. link(2), unlike
   rename(2), never replaces an existing file: a file that appeared meanwhile (another
   instance archiving the same job) is compared instead of overwritten;
then the directory is fsynced once, and at the end the parent of every directory the batch
made. Only then does write() return. Each temporary file's fsync is handed to a small
thread pool as soon as the file is written, so the fsyncs of a round run concurrently with
each other and with the writing of the next files (fsync releases the GIL, and a journaling
file system commits concurrent fsyncs together); the round links nothing before every
fsync has returned. A crash leaves at worst temporary files, which
sweep_temporary_files() removes at start-up; the flock tells a live instance's temporary
files (same archive shared by several consumers) from a dead one's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from consumers.archive.layout import TEMP_PREFIX, ArchivePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK = 1 << 20
# Temporary files open at once: well below the usual 1024 descriptors per process.
MAX_OPEN_FILES = 256
# fsyncs in flight at once. A journaling file system (ext4's jbd2, XFS) commits concurrent
# fsyncs in one transaction, so a round's fsyncs share commits instead of waiting for one each.
FSYNC_THREADS = 16
STAGES = ("write", "fsync", "link", "dirsync")


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


@dataclass
class WriteReport:
    written: int = 0
    # Files another writer linked into place between our look and our link, with the
    # same bytes: nothing to do, as for any duplicate.
    already_present: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # by stage


@dataclass
class _Pending:
    temp_name: str
    final: ArchivePath
    content: bytes
    fd: int | None = None
    temp_removed: bool = False


def _io_error(exc: OSError, what: str) -> ArchiveIOError:
    return ArchiveIOError(f"{what}: {exc.strerror or exc}", exc.errno)


def parse_mode(text: str, what: str) -> int:
    """'0640', '640' or '0o640' -> 0o640; permission bits only."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an octal mode such as 0640") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{what} {text!r} must be permission bits between 0000 and 0777")
    return mode


class ArchiveWriter:
    def __init__(self, root: Path, file_mode: int, dir_mode: int) -> None:
        self.root = root
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self._pool: ThreadPoolExecutor | None = None  # started by the first session

    def close(self) -> None:
        """Stop the fsync threads; a later session starts them again."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _open_root(self) -> int:
        # The root itself may be a symlink (an operator's choice); nothing below it may.
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _io_error(exc, f"archive root {self.root}") from exc

    def check_root(self) -> None:
        """Raise ArchiveIOError unless the root is a directory we can open."""
        os.close(self._open_root())

    def sweep_temporary_files(self) -> int:
        """Remove temporary files left by a crashed writer; return how many were removed.

        Walks the whole archive without following symlinks; a temporary file whose flock is
        held belongs to a live writer and is left alone.
        """
        root_fd = self._open_root()
        removed = 0
        try:
            for _, _, names, dir_fd in os.fwalk(".", dir_fd=root_fd, follow_symlinks=False):
                for name in names:
                    if name.startswith(TEMP_PREFIX) and _remove_if_abandoned(dir_fd, name):
                        removed += 1
        except OSError as exc:
            raise _io_error(exc, f"sweeping {self.root}") from exc
        finally:
            os.close(root_fd)
        return removed

    @contextmanager
    def session(self) -> Iterator[ArchiveSession]:
        """Directory descriptors opened during one batch, closed at its end."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="archive-fsync")
        session = ArchiveSession(self, self._open_root(), self._pool)
        try:
            yield session
        finally:
            session.close()


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


class ArchiveSession:
    """One batch's access to the archive. Directories are walked from the root for every
    access and closed again, so a batch spread over many directories never holds more than
    MAX_OPEN_FILES temporary files and one directory chain open."""

    def __init__(self, writer: ArchiveWriter, root_fd: int, pool: ThreadPoolExecutor) -> None:
        self.writer = writer
        self._root_fd = root_fd
        self._pool = pool

    def close(self) -> None:
        os.close(self._root_fd)

    def read(self, path: ArchivePath) -> bytes | None:
        """The file's bytes, or None if it does not exist.

        Raises UnsafeArchiveEntryError for a symlink or a non-regular file on the way, and
        ArchiveIOError when the file system fails.
        """
        with self._directory(path.directory, created=None) as dir_fd:
            if dir_fd is None:
                return None
            return _read_file(dir_fd, path)

    @contextmanager
    def _directory(self, components: tuple[str, ...],
                   created: set[tuple[str, ...]] | None) -> Iterator[int | None]:
        """The directory's descriptor, walked from the root without following symlinks.

        created None: None for a missing directory. Otherwise missing directories are made
        with the directory mode, and each parent that gained one is added to created.
        """
        opened: list[int] = []
        try:
            fd = self._root_fd
            for depth, name in enumerate(components, start=1):
                key = components[:depth]
                child = _open_dir(fd, name, key)
                if child is None:
                    if created is None:
                        yield None
                        return
                    child = self._make_dir(fd, name, key)
                    created.add(key[:-1])
                opened.append(child)
                fd = child
            yield fd
        except OSError as exc:
            raise _io_error(exc, f"directory {'/'.join(components)}") from exc
        finally:
            for fd in opened:
                os.close(fd)

    def _make_dir(self, parent_fd: int, name: str, key: tuple[str, ...]) -> int:
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            os.mkdir(name, self.writer.dir_mode, dir_fd=parent_fd)
        fd = _open_dir(parent_fd, name, key)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, "removed right after mkdir", "/".join(key))
        os.fchmod(fd, self.writer.dir_mode)
        return fd

    def write(self, files: Sequence[tuple[ArchivePath, bytes]]) -> WriteReport:
        """Make files durable at their paths, none of which may exist yet (see module doc).

        Files are handled directory by directory, in their order within each directory
        (a job's sidecar after its data files). Raises ArchiveIOError, after removing its
        temporary files, if any step fails; files already linked stay (they are complete,
        and the retry finds them).
        """
        report = WriteReport(seconds=dict.fromkeys(STAGES, 0.0))
        by_directory: dict[tuple[str, ...], list[tuple[ArchivePath, bytes]]] = {}
        for path, content in files:
            by_directory.setdefault(path.directory, []).append((path, content))
        created: set[tuple[str, ...]] = set()
        try:
            for directory, items in by_directory.items():
                with self._directory(directory, created=created) as dir_fd:
                    assert dir_fd is not None  # created is given: made or raised
                    for start in range(0, len(items), MAX_OPEN_FILES):
                        self._write_round(dir_fd, items[start:start + MAX_OPEN_FILES], report)
                    _timed(report, "dirsync", os.fsync, dir_fd)
            # A directory made in this batch is durable once its parent's entry is.
            for parent in sorted(created):
                with self._directory(parent, created=None) as parent_fd:
                    if parent_fd is not None:
                        _timed(report, "dirsync", os.fsync, parent_fd)
        except UnsafeArchiveEntryError as exc:
            raise ArchiveIOError(f"archive changed while writing: {exc}", None) from exc
        except OSError as exc:
            raise _io_error(exc, "writing the batch") from exc
        return report

    def _write_round(self, dir_fd: int, items: Sequence[tuple[ArchivePath, bytes]],
                     report: WriteReport) -> None:
        """Write every item to a temporary file, fsync them all, then link them all.

        Files are created one after another (creations in one directory take its lock in
        turn anyway); each fsync runs on the pool meanwhile. Stage "fsync" is the wait for
        the fsyncs still running once the last file is written.
        """
        pending: list[_Pending] = []
        syncs: list[Future[None]] = []
        try:
            started = time.monotonic()
            try:
                for path, content in items:
                    item = self._write_temporary(dir_fd, path, content, pending)
                    syncs.append(self._pool.submit(os.fsync, _fd(item)))
                report.seconds["write"] += time.monotonic() - started
            finally:
                # Even after a failure: _discard must not close a descriptor being fsynced.
                started = time.monotonic()
                wait(syncs)
                report.seconds["fsync"] += time.monotonic() - started
            for sync in syncs:
                sync.result()  # raises the first fsync's error
            # Linked one after another, in order: a job's sidecar after its data files.
            started = time.monotonic()
            for item in pending:
                self._publish(dir_fd, item, report)
            report.seconds["link"] += time.monotonic() - started
        finally:
            _discard(dir_fd, pending)

    def _write_temporary(self, dir_fd: int, path: ArchivePath, content: bytes,
                         pending: list[_Pending]) -> _Pending:
        item = _Pending(TEMP_PREFIX + secrets.token_hex(8), path, content)
        item.fd = os.open(item.temp_name, _CREATE_FLAGS, self.writer.file_mode, dir_fd=dir_fd)
        pending.append(item)  # from here on, a failure removes the temporary file
        fcntl.flock(item.fd, fcntl.LOCK_EX)  # marks it live for a concurrent sweep
        os.fchmod(item.fd, self.writer.file_mode)
        view = memoryview(content)
        while view:
            view = view[os.write(item.fd, view):]
        return item

    def _publish(self, dir_fd: int, item: _Pending, report: WriteReport) -> None:
        try:
            os.link(item.temp_name, item.final.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                    follow_symlinks=False)
            report.written += 1
        except FileExistsError:
            if _read_file(dir_fd, item.final) != item.content:
                raise ArchiveIOError(f"{item.final} appeared meanwhile with other content;"
                                     " the batch is planned again", errno.EEXIST) from None
            report.already_present += 1
        os.unlink(item.temp_name, dir_fd=dir_fd)
        item.temp_removed = True


def _open_dir(parent_fd: int, name: str, key: tuple[str, ...]) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeArchiveEntryError(
                f"{'/'.join(key)} is a symlink or not a directory") from exc
        raise


def _read_file(dir_fd: int, path: ArchivePath) -> bytes | None:
    try:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise UnsafeArchiveEntryError(f"{path} is a symlink") from exc
        raise _io_error(exc, f"reading {path}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeArchiveEntryError(f"{path} is not a regular file")
        chunks: list[bytes] = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise _io_error(exc, f"reading {path}") from exc
    finally:
        os.close(fd)


def _timed(report: WriteReport, stage: str, operation: Callable[[int], None], fd: int) -> None:
    started = time.monotonic()
    operation(fd)
    report.seconds[stage] += time.monotonic() - started


def _fd(item: _Pending) -> int:
    assert item.fd is not None  # set when the temporary file was created
    return item.fd


def _discard(dir_fd: int, pending: Sequence[_Pending]) -> None:
    """Close every temporary file and remove those not yet removed (best effort: what a
    failure leaves behind is swept at the next start)."""
    for item in pending:
        if item.fd is not None:
            os.close(item.fd)
        if not item.temp_removed:
            with contextlib.suppress(OSError):  # swept at the next start
                os.unlink(item.temp_name, dir_fd=dir_fd)
