"""The archive's file system adapter: durable, no-overwrite writes below one root.

Every path is walked from the archive root one component at a time with directory file
descriptors (openat semantics) and O_NOFOLLOW, so a symlink inside the archive is never
followed and nothing is ever written outside the root. Within one session (one batch) the
leaf directories walked are kept open, at most DIR_CACHE_SIZE of them (the least recently
used is closed first), so that the batch's reads and writes do not walk the same chain
again for every file; all are closed when the session ends.

A batch of files is made durable directory by directory, so that one directory fsync covers
every job of the batch stored there; within a directory, in rounds of up to MAX_OPEN_FILES:
1. each file is written to a file without a name in the directory: an O_TMPFILE inode
   (mode set with fchmod, so the umask does not matter);
2. every file of the round is fsynced;
3. each is given its final name with link(2) of /proc/self/fd/<fd>. link(2), unlike
   rename(2), never replaces an existing file: a file that appeared meanwhile (another
   instance archiving the same job) is compared instead of overwritten;
then the directory is fsynced once, and at the end the parent of every directory the batch
made. Only then does write() return. Each file's fsync is handed to a small thread pool as
soon as the file is written, so the fsyncs of a round run concurrently with each other and
with the writing of the next files (fsync releases the GIL, and a journaling file system
commits concurrent fsyncs together); the round links nothing before every fsync has
returned. Files without a name are the cheaper way (per file one directory entry made,
instead of a temporary one made and removed beside it, and no lock), and a crash leaves
nothing behind: the kernel frees an inode that was never linked.

Where O_TMPFILE is refused (EOPNOTSUPP, EISDIR, EINVAL: NFS and other file systems without
it, old kernels) or /proc/self/fd cannot name the file, each file is written to a named
temporary file `.sarchive-tmp-<random>` instead (O_CREAT|O_EXCL, flock-ed while open),
fsynced, linked to its final name the same way and its temporary name removed. A writer
finds out on its first file; a refusal met later (a directory on another file system, or a
link(2) that /proc cannot serve) still falls back for that file, and the writer uses named
temporary files from then on. A crash on this path leaves at worst temporary files, which
sweep_temporary_files() removes at start-up (as it does those of older versions); the
flock tells a live instance's temporary files (same archive shared by several consumers)
from a dead one's.

Descriptors: at most MAX_OPEN_FILES files of a round, DIR_CACHE_SIZE cached directories,
the root and one directory chain being walked are open at once, well under the usual limit
of 1024 per process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue

from schemas.archive_layout import TEMP_PREFIX, ArchivePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A file without a name, to be linked later (so not O_EXCL, which would forbid that).
_TMPFILE_FLAGS = (os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC) if hasattr(os, "O_TMPFILE") \
    else None
# What open(2) says where O_TMPFILE is not supported: by the file system (EOPNOTSUPP), by
# a kernel older than 3.11 (EISDIR, from the O_DIRECTORY bit in O_TMPFILE), or otherwise.
_TMPFILE_REFUSED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
PROC_FD_DIR = "/proc/self/fd"
_READ_CHUNK = 1 << 20
# Files open at once in a round: well below the usual 1024 descriptors per process.
MAX_OPEN_FILES = 256
# Leaf directories a session keeps open (see the module doc for the descriptor budget).
DIR_CACHE_SIZE = 64
# fsyncs in flight at once. A journaling file system (ext4's jbd2, XFS) commits concurrent
# fsyncs in one transaction, so a round's fsyncs share commits instead of waiting for one each
# (on a journaled ext4, 64 threads instead of 16 took R_fs from ~2,300 to ~2,700 events/s).
FSYNC_THREADS = 64
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
    final: ArchivePath
    content: bytes
    fd: int | None = None
    temp_name: str | None = None  # None: an unnamed (O_TMPFILE) file
    temp_removed: bool = False


class _Syncs:
    """The fsyncs of one round: how many are still running, and the first error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._finished = threading.Event()
        self._finished.set()
        self.error: Exception | None = None

    def started(self) -> None:
        with self._lock:
            if self._running == 0:
                self._finished.clear()
            self._running += 1

    def ended(self, error: Exception | None) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
            self._running -= 1
            if self._running == 0:
                self._finished.set()

    def wait(self) -> None:
        """Until every fsync started has returned (or failed)."""
        self._finished.wait()


class _FsyncPool:
    """Threads fsyncing the descriptors that rounds hand them: a queue put per file, about
    half the CPU of a ThreadPoolExecutor.submit and its Future."""

    def __init__(self, threads: int) -> None:
        self._queue: SimpleQueue[tuple[_Syncs, int] | None] = SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"archive-fsync-{n}",
                                          daemon=True) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def fsync(self, syncs: _Syncs, fd: int) -> None:
        syncs.started()
        self._queue.put((syncs, fd))

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            syncs, fd = job
            try:
                os.fsync(fd)
            except Exception as exc:  # the round raises it
                syncs.ended(exc)
            else:
                syncs.ended(None)


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
    """unnamed_temporaries False: always write through named temporary files (the fallback
    where O_TMPFILE is refused; see the module doc)."""

    def __init__(self, root: Path, file_mode: int, dir_mode: int, *,
                 unnamed_temporaries: bool = True) -> None:
        self.root = root
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        # open(2) flags of a file without a name (None: never try). A seam for tests too:
        # O_WRONLY|O_DIRECTORY is what a kernel without O_TMPFILE sees, and refuses.
        self.tmpfile_flags = _TMPFILE_FLAGS if unnamed_temporaries else None
        # Whether files are created without a name: None until the first file finds out.
        self.unnamed: bool | None = None if self.tmpfile_flags is not None else False
        # Where an open file can be named from (a seam for tests: any other directory makes
        # link(2) fail with ENOENT, as when /proc is not mounted).
        self.proc_fd_dir = PROC_FD_DIR
        self._pool: _FsyncPool | None = None  # started by the first session

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
            self._pool = _FsyncPool(FSYNC_THREADS)
        session = ArchiveSession(self, self._open_root(), self._pool)
        try:
            yield session
        finally:
            session.close()

    def proc_path(self, fd: int) -> str:
        return f"{self.proc_fd_dir}/{fd}"

    def open_unnamed(self, dir_fd: int) -> int | None:
        """A new file without a name in the directory (O_TMPFILE), or None where O_TMPFILE is
        refused or, on first use, /proc/self/fd cannot name it: then use a named temporary
        file, now and for the files after it."""
        if self.tmpfile_flags is None:
            return None
        try:
            fd = os.open(".", self.tmpfile_flags, self.file_mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _TMPFILE_REFUSED:
                self.unnamed = False
                return None
            raise
        if self.unnamed is None:
            if not self.proc_names(fd):
                os.close(fd)
                self.unnamed = False
                return None
            self.unnamed = True
        return fd

    def proc_names(self, fd: int) -> bool:
        """Whether /proc/self/fd/<fd> reaches the open file (it does unless /proc is missing
        or hidden)."""
        try:
            os.stat(self.proc_path(fd))
        except OSError:
            return False
        return True


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
    """One batch's access to the archive. Up to DIR_CACHE_SIZE leaf directories walked are
    kept open (least recently used closed first) and all closed by close(), so a batch
    spread over many directories never holds more than MAX_OPEN_FILES files, the cached
    directories and one directory chain open."""

    def __init__(self, writer: ArchiveWriter, root_fd: int, pool: _FsyncPool) -> None:
        self.writer = writer
        self._root_fd = root_fd
        self._pool = pool
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def close(self) -> None:
        fds = [*self._dirs.values(), self._root_fd]
        self._dirs.clear()
        for fd in fds:
            os.close(fd)

    def read(self, path: ArchivePath) -> bytes | None:
        """The file's bytes, or None if it does not exist.

        Raises UnsafeArchiveEntryError for a symlink or a non-regular file on the way, and
        ArchiveIOError when the file system fails.
        """
        dir_fd = self._directory(path.directory, created=None)
        if dir_fd is None:
            return None
        return _read_file(dir_fd, path)

    def _directory(self, components: tuple[str, ...],
                   created: set[tuple[str, ...]] | None) -> int | None:
        """The directory's descriptor, from the cache or walked from the root without
        following symlinks. It stays open until the session ends or DIR_CACHE_SIZE other
        directories are asked for: use it before asking for another.

        created None: None for a missing directory. Otherwise missing directories are made
        with the directory mode, and each parent that gained one is added to created.
        """
        if not components:
            return self._root_fd
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

    def _walk(self, components: tuple[str, ...],
              created: set[tuple[str, ...]] | None) -> int | None:
        """The directory's descriptor, walked from the root (see _directory); the caller
        owns it."""
        opened: list[int] = []
        try:
            fd = self._root_fd
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
                dir_fd = self._directory(directory, created=created)
                assert dir_fd is not None  # created is given: made or raised
                for start in range(0, len(items), MAX_OPEN_FILES):
                    self._write_round(dir_fd, items[start:start + MAX_OPEN_FILES], report)
                _timed(report, "dirsync", os.fsync, dir_fd)
            # A directory made in this batch is durable once its parent's entry is.
            for parent in sorted(created):
                parent_fd = self._directory(parent, created=None)
                if parent_fd is not None:
                    _timed(report, "dirsync", os.fsync, parent_fd)
        except UnsafeArchiveEntryError as exc:
            raise ArchiveIOError(f"archive changed while writing: {exc}", None) from exc
        except OSError as exc:
            raise _io_error(exc, "writing the batch") from exc
        return report

    def _write_round(self, dir_fd: int, items: Sequence[tuple[ArchivePath, bytes]],
                     report: WriteReport) -> None:
        """Write every item to a file without a name (or a temporary file), fsync them all,
        then link them all.

        Files are created one after another (creations in one directory take its lock in
        turn anyway); each fsync runs on the pool meanwhile. Stage "fsync" is the wait for
        the fsyncs still running once the last file is written.
        """
        pending: list[_Pending] = []
        syncs = _Syncs()
        try:
            started = time.monotonic()
            try:
                for path, content in items:
                    item = self._write_file(dir_fd, path, content, pending)
                    self._pool.fsync(syncs, _fd(item))
                report.seconds["write"] += time.monotonic() - started
            finally:
                # Even after a failure: _discard must not close a descriptor being fsynced.
                started = time.monotonic()
                syncs.wait()
                report.seconds["fsync"] += time.monotonic() - started
            if syncs.error is not None:
                raise syncs.error
            # Linked one after another, in order: a job's sidecar after its data files.
            started = time.monotonic()
            for item in pending:
                self._publish(dir_fd, item, report)
            report.seconds["link"] += time.monotonic() - started
        finally:
            _discard(dir_fd, pending)

    def _write_file(self, dir_fd: int, path: ArchivePath, content: bytes,
                    pending: list[_Pending]) -> _Pending:
        item = _Pending(path, content)
        fd = self.writer.open_unnamed(dir_fd) if self.writer.unnamed is not False else None
        if fd is None:
            item.fd = self._create_temporary(dir_fd, item)
        else:
            item.fd = fd
        pending.append(item)  # from here on, a failure closes it and removes a temporary name
        if item.temp_name is not None:
            fcntl.flock(item.fd, fcntl.LOCK_EX)  # marks it live for a concurrent sweep
        _write_content(item.fd, self.writer.file_mode, content)
        return item

    def _create_temporary(self, dir_fd: int, item: _Pending) -> int:
        name = TEMP_PREFIX + secrets.token_hex(8)
        fd = os.open(name, _CREATE_FLAGS, self.writer.file_mode, dir_fd=dir_fd)
        item.temp_name = name  # only once it is ours: a failure must not remove another's
        return fd

    def _publish(self, dir_fd: int, item: _Pending, report: WriteReport) -> None:
        try:
            if item.temp_name is None:
                self._link_unnamed(dir_fd, item)
            else:
                os.link(item.temp_name, item.final.name, src_dir_fd=dir_fd,
                        dst_dir_fd=dir_fd, follow_symlinks=False)
            report.written += 1
        except FileExistsError:
            if _read_file(dir_fd, item.final) != item.content:
                raise ArchiveIOError(f"{item.final} appeared meanwhile with other content;"
                                     " the batch is planned again", errno.EEXIST) from None
            report.already_present += 1
        if item.temp_name is not None:
            os.unlink(item.temp_name, dir_fd=dir_fd)
            item.temp_removed = True

    def _link_unnamed(self, dir_fd: int, item: _Pending) -> None:
        """Give the unnamed file its final name; where /proc/self/fd turns out not to name
        it, write it again as a named temporary file (fsynced) and link that."""
        fd = _fd(item)
        try:
            os.link(self.writer.proc_path(fd), item.final.name, dst_dir_fd=dir_fd,
                    follow_symlinks=True)
            return
        except FileNotFoundError:
            if self.writer.proc_names(fd):
                raise  # /proc names it: the directory itself is gone
        self.writer.unnamed = False  # and the files after this one get names from the start
        item.fd = None
        os.close(fd)
        item.fd = self._create_temporary(dir_fd, item)
        fcntl.flock(item.fd, fcntl.LOCK_EX)
        _write_content(item.fd, self.writer.file_mode, item.content)
        os.fsync(item.fd)
        os.link(_temp_name(item), item.final.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                follow_symlinks=False)


def _write_content(fd: int, mode: int, content: bytes) -> None:
    os.fchmod(fd, mode)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


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
    assert item.fd is not None  # set when the file was created
    return item.fd


def _temp_name(item: _Pending) -> str:
    assert item.temp_name is not None  # set when the temporary file was created
    return item.temp_name


def _discard(dir_fd: int, pending: Sequence[_Pending]) -> None:
    """Close every file and remove the temporary names not yet removed (best effort: what
    a failure leaves behind is swept at the next start; an unnamed file simply vanishes)."""
    for item in pending:
        if item.fd is not None:
            os.close(item.fd)
        if item.temp_name is not None and not item.temp_removed:
            with contextlib.suppress(OSError):  # swept at the next start
                os.unlink(item.temp_name, dir_fd=dir_fd)
