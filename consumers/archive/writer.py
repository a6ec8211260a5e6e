"""The archive's writer: durable, no-overwrite writes of a batch's files below one root.

A batch of files is made durable directory by directory, so that one directory fsync covers
every job of the batch stored there; within a directory, in rounds of up to MAX_OPEN_FILES:
1. each file is written by the writer's staging strategy (consumers.archive.staging: a file
   without a name, or a named temporary file where O_TMPFILE is refused), its mode set with
   fchmod so the umask does not matter;
2. every file of the round is fsynced;
3. each is given its final name with link(2), which never replaces an existing file: a file
   that appeared meanwhile (another instance archiving the same job) is compared instead of
   overwritten;
then the directory is fsynced once, and at the end the parent of every directory the batch
made. Only then does write() return. Each file's fsync is handed to the FsyncPool as soon as
the file is written, so the fsyncs of a round run concurrently with each other and with the
writing of the next files; the round links nothing before every fsync has returned.
Directories are reached through a SafeTree (consumers.archive.safe_tree): never through a
symlink, never outside the root.

The staging strategy is chosen once, at the writer's first file, by trying a file without a
name in its directory. A refusal met later (a directory on another file system, or a link(2)
that /proc cannot serve) still falls back for that file, and the writer stages named
temporary files from then on. A crash leaves at worst named temporary files, all in the
staging directory, which the start-up sweep removes (consumers.archive.archive_root).

Descriptors: at most MAX_OPEN_FILES files of a round, DIR_CACHE_SIZE cached directories,
the root and one directory chain being walked are open at once, well under the usual limit
of 1024 per process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from consumers.archive.archive_root import open_root
from consumers.archive.errors import ArchiveIOError, UnsafeArchiveEntryError, io_error
from consumers.archive.fsync_pool import FSYNC_THREADS, FsyncPool, FsyncRound
from consumers.archive.safe_tree import Directory, SafeTree, read_file
from consumers.archive.staging import (
    PROC_FD_DIR,
    TMPFILE_FLAGS,
    NamedStaging,
    StagedFile,
    Staging,
    StagingArea,
    StagingRefusedError,
    choose_staging,
)
from schemas.archive_layout import ArchivePath

# Files open at once in a round: well below the usual 1024 descriptors per process.
MAX_OPEN_FILES = 256
STAGES = ("write", "fsync", "link", "dirsync")


@dataclass
class WriteReport:
    written: int = 0
    # Files another writer linked into place between our look and our link, with the
    # same bytes: nothing to do, as for any duplicate.
    already_present: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # by stage


class ArchiveWriter:
    """unnamed_temporaries False: always stage named temporary files (the fallback where
    O_TMPFILE is refused; see the module doc)."""

    def __init__(self, root: Path, file_mode: int, dir_mode: int, *,
                 unnamed_temporaries: bool = True) -> None:
        self.root = root
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        # What the first file tries (None: no file without a name); seams for tests.
        self.tmpfile_flags = TMPFILE_FLAGS if unnamed_temporaries else None
        self.proc_fd_dir = PROC_FD_DIR
        # Chosen at the first file (choose_staging); NamedStaging once a refusal is met.
        self.staging: Staging | None = None
        self._pool: FsyncPool | None = None  # started by the first session

    def close(self) -> None:
        """Stop the fsync threads; a later session starts them again."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    @contextmanager
    def session(self) -> Iterator[ArchiveSession]:
        """One batch's access to the archive; its directory descriptors close at its end."""
        if self._pool is None:
            self._pool = FsyncPool(FSYNC_THREADS)
        tree = SafeTree(open_root(self.root), self.dir_mode)
        area = StagingArea(tree.root_fd, self.dir_mode)
        try:
            yield ArchiveSession(self, tree, area, self._pool)
        finally:
            area.close()
            tree.close()

    def staging_for(self, dir_fd: int) -> Staging:
        """The staging strategy, chosen in this directory if this is the first file."""
        if self.staging is None:
            self.staging = choose_staging(dir_fd, self.file_mode, self.tmpfile_flags,
                                          self.proc_fd_dir)
        return self.staging

    def fall_back_to_named(self) -> NamedStaging:
        """Named temporary files from now on: a file without a name was refused."""
        named = NamedStaging(self.file_mode)
        self.staging = named
        return named


class ArchiveSession:
    """One batch's reads and writes, through its SafeTree, so a batch spread over many
    directories never holds more than MAX_OPEN_FILES files, the cached directories and one
    directory chain open."""

    def __init__(self, writer: ArchiveWriter, tree: SafeTree, area: StagingArea,
                 pool: FsyncPool) -> None:
        self.writer = writer
        self._tree = tree
        self._area = area
        self._pool = pool

    def read(self, path: ArchivePath) -> bytes | None:
        """The file's bytes, or None if it does not exist.

        Raises UnsafeArchiveEntryError for a symlink or a non-regular file on the way, and
        ArchiveIOError when the file system fails.
        """
        dir_fd = self._tree.directory(path.directory, created=None)
        if dir_fd is None:
            return None
        return read_file(dir_fd, path)

    def write(self, files: Sequence[tuple[ArchivePath, bytes]]) -> WriteReport:
        """Make files durable at their paths, none of which may exist yet (see module doc).

        Files are handled directory by directory, in their order within each directory
        (a job's sidecar after its data files). Raises ArchiveIOError, after removing its
        temporary files, if any step fails; files already linked stay (they are complete,
        and the retry finds them).
        """
        report = WriteReport(seconds=dict.fromkeys(STAGES, 0.0))
        by_directory: dict[Directory, list[tuple[ArchivePath, bytes]]] = {}
        for path, content in files:
            by_directory.setdefault(path.directory, []).append((path, content))
        created: set[Directory] = set()
        try:
            for directory, items in by_directory.items():
                dir_fd = self._tree.directory(directory, created=created)
                assert dir_fd is not None  # created is given: made or raised
                for start in range(0, len(items), MAX_OPEN_FILES):
                    self._write_round(dir_fd, items[start:start + MAX_OPEN_FILES], report)
                _timed(report, "dirsync", os.fsync, dir_fd)
            # A directory made in this batch is durable once its parent's entry is.
            for parent in sorted(created):
                parent_fd = self._tree.directory(parent, created=None)
                if parent_fd is not None:
                    _timed(report, "dirsync", os.fsync, parent_fd)
        except UnsafeArchiveEntryError as exc:
            raise ArchiveIOError(f"archive changed while writing: {exc}", None) from exc
        except OSError as exc:
            raise io_error(exc, "writing the batch") from exc
        return report

    def _write_round(self, dir_fd: int, items: Sequence[tuple[ArchivePath, bytes]],
                     report: WriteReport) -> None:
        """Stage every item, fsync them all, then link them all.

        Files are created one after another (creations in one directory take its lock in
        turn anyway); each fsync runs on the pool meanwhile. Stage "fsync" is the wait for
        the fsyncs still running once the last file is written.
        """
        staged: list[StagedFile] = []
        fsyncs = FsyncRound()
        try:
            started = time.monotonic()
            try:
                for path, content in items:
                    item = StagedFile(path, content)
                    # From here on, a failure closes it and removes a temporary name.
                    staged.append(item)
                    self._stage(dir_fd, item)
                    self._pool.fsync(fsyncs, item.descriptor())
                report.seconds["write"] += time.monotonic() - started
            finally:
                # Even after a failure: _discard must not close a descriptor being fsynced.
                started = time.monotonic()
                fsyncs.wait()
                report.seconds["fsync"] += time.monotonic() - started
            if fsyncs.error is not None:
                raise fsyncs.error
            # Linked one after another, in order: a job's sidecar after its data files.
            started = time.monotonic()
            for item in staged:
                self._publish(dir_fd, item, report)
            report.seconds["link"] += time.monotonic() - started
        finally:
            _discard(staged)

    def _stage(self, dir_fd: int, item: StagedFile) -> None:
        try:
            self.writer.staging_for(dir_fd).open(dir_fd, item, self._area)
        except StagingRefusedError:
            self.writer.fall_back_to_named().open(dir_fd, item, self._area)
        _write_content(item.descriptor(), self.writer.file_mode, item.content)

    def _publish(self, dir_fd: int, item: StagedFile, report: WriteReport) -> None:
        try:
            self._link(dir_fd, item)
            report.written += 1
        except FileExistsError:
            if read_file(dir_fd, item.final) != item.content:
                raise ArchiveIOError(f"{item.final} appeared meanwhile with other content;"
                                     " the batch is planned again", errno.EEXIST) from None
            report.already_present += 1
        if item.temp_name is not None:
            os.unlink(item.temp_name, dir_fd=item.temp_dir_fd)
            item.temp_removed = True

    def _link(self, dir_fd: int, item: StagedFile) -> None:
        """Give the file its final name; where /proc/self/fd turns out not to name a file
        without a name, stage it again as a named temporary file (fsynced) and link that."""
        assert item.staging is not None  # set when the file was staged
        try:
            item.staging.link(dir_fd, item)
        except StagingRefusedError:
            self._link_named_copy(dir_fd, item)

    def _link_named_copy(self, dir_fd: int, item: StagedFile) -> None:
        named = self.writer.fall_back_to_named()
        fd, item.fd = item.descriptor(), None
        os.close(fd)
        named.open(dir_fd, item, self._area)
        _write_content(item.descriptor(), self.writer.file_mode, item.content)
        os.fsync(item.descriptor())
        named.link(dir_fd, item)


def _write_content(fd: int, mode: int, content: bytes) -> None:
    os.fchmod(fd, mode)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


def _timed(report: WriteReport, stage: str, operation: Callable[[int], None], fd: int) -> None:
    started = time.monotonic()
    operation(fd)
    report.seconds[stage] += time.monotonic() - started


def _discard(staged: Sequence[StagedFile]) -> None:
    """Close every file and remove the temporary names not yet removed (best effort: what
    a failure leaves behind is swept at the next start; a file without a name vanishes)."""
    for item in staged:
        if item.fd is not None:
            os.close(item.fd)
        if item.temp_name is not None and not item.temp_removed:
            with contextlib.suppress(OSError):  # swept at the next start
                os.unlink(item.temp_name, dir_fd=item.temp_dir_fd)
