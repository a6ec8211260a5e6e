"""The inotify adapter: watches the spool and turns kernel events into job references.

Slurm keeps each job in StateSaveLocation/hash.<id % 10>/job.<id>/{script,environment}, with
hash directories created lazily and its own state files (job_state, node_state, *.old, *.new)
beside them. Torque keeps <base>.SC, <base>.JB (and <base>.TA, <base>-<i>.JB for arrays) in
server_priv/jobs or, with --torque-subdirs, in its 0-9 subdirectories; subdirectories that hold
job files when the watcher starts are followed even without the setting (with a warning). Grid
Engine's qmaster keeps each job's record at jobs/00/0000/0011 (a file renamed into place, or an
array job's directory holding `common`), its levels created lazily and removed when empty, and
its script in job_scripts/<id> (see producer.gridengine_spool): the jobs/ tree is watched at
every level, a record's directory like a Slurm job's, and job_scripts/ for close-writes that
complete a job already detected.

Every level is watch-then-scan: the watch is added first and the directory listed after, so
whatever was created before the watch existed is found by the listing and whatever comes
after by events. A Slurm job directory (a Grid Engine array job's directory) gets a watch of
its own (added by the service through watch_job() right before it reads the job) for the
close-writes of its files; it is released once the job is read, by a small thread of its own
(see _WatchRemover). A lost-event signal (IN_Q_OVERFLOW) triggers a full rescan. A directory
that cannot be watched (the max_user_watches limit; a hash directory slurmctld creates 0700 and
opens up a moment later, for a producer without root's capabilities) leaves the watcher
`degraded`: the service calls retry_watches() on a back-off timer, which adds the watches again
and scans each directory once it is watched, until none is left unwatched.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inotify_simple import INotify, flags

from producer.errors import REASON_SYMLINK
from producer.gridengine_spool import (
    COMMON_FILE,
    SCRIPTS_DIR,
    is_jobs_level,
    is_record_entry,
    record_path,
    script_job_id,
)
from producer.jobs import JobRef
from producer.slurm_spool import ENVIRONMENT_FILE, SCRIPT_FILE, SLURM_HASH_DIR
from producer.torque_spool import torque_job_base
from schemas.model import Scheduler

log = logging.getLogger(__name__)

_NO_SYMLINKS = flags.ONLYDIR | flags.DONT_FOLLOW
DIRECTORY_MASK = (flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM
                  | flags.DELETE_SELF | flags.MOVE_SELF | _NO_SYMLINKS)
# Torque writes job files straight into its directories, Grid Engine its scripts into
# job_scripts/: their close-writes matter there.
FILES_DIRECTORY_MASK = DIRECTORY_MASK | flags.CLOSE_WRITE
JOB_MASK = flags.CLOSE_WRITE | flags.MOVED_TO | _NO_SYMLINKS
_GONE = flags.DELETE | flags.MOVED_FROM
_WRITTEN = flags.CLOSE_WRITE | flags.MOVED_TO
_SELF_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT | flags.IGNORED
_LIMIT_ERRORS = {errno.ENOSPC, errno.ENOMEM}
SLURM_JOB_PREFIX = "job."
SLURM_JOB_FILES = frozenset({SCRIPT_FILE, ENVIRONMENT_FILE})
# The files whose close-write or rename into a watched job directory may complete the job.
JOB_FILES = {Scheduler.SLURM: SLURM_JOB_FILES, Scheduler.GRIDENGINE: frozenset({COMMON_FILE})}
TORQUE_SUBDIRS = frozenset(str(d) for d in range(10))
TORQUE_SCRIPT_SUFFIX = ".SC"


class InotifyLike(Protocol):
    """What the watcher uses of inotify_simple.INotify (the seam for injecting events)."""

    def add_watch(self, path: str, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: int | None = None) -> Iterable[Any]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class _WatchRemover:
    """Removes inotify watches on a thread of its own.

    inotify_rm_watch waits for the kernel's SRCU grace period (~0.1 ms per watch while events
    are being delivered): with one removal per job that is a tenth of the loop's time.
    inotify_simple calls libc through ctypes, which releases the GIL, so the loop goes on
    meanwhile. A watch released here is already forgotten by the watcher: events it still
    delivers are ignored. The one hazard is the kernel handing the same watch descriptor back
    when the same directory is watched again before its removal ran: claim() settles that.
    """

    def __init__(self, inotify: InotifyLike) -> None:
        self._inotify = inotify
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # None: stop
        self._lock = threading.Lock()
        self._removed = threading.Condition(self._lock)  # claim() waits on it
        self._pending: set[int] = set()  # queued and not claimed back
        self._removing: int | None = None
        self._thread: threading.Thread | None = None

    def remove(self, wd: int) -> None:
        with self._lock:
            self._pending.add(wd)
        self._queue.put(wd)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inotify-rm-watch",
                                            daemon=True)
            self._thread.start()

    def claim(self, wd: int) -> bool:
        """add_watch() just returned wd: keep it from an earlier release's removal.

        Returns False when that removal was already under way: it has been waited for, and
        the caller adds the watch again (and gets a new descriptor).
        """
        with self._lock:
            if wd in self._pending:
                self._pending.discard(wd)  # not removed yet: the removal is cancelled
                return True
            if self._removing != wd:
                return True
            while self._removing == wd:
                self._removed.wait()
            return False

    def close(self) -> None:
        """Stop the thread; queued removals are dropped (closing the inotify descriptor
        removes every watch at once)."""
        with self._lock:
            self._pending.clear()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (wd := self._queue.get()) is not None:
            with self._lock:
                if wd not in self._pending:
                    continue  # claimed back, queued twice, or closing
                self._pending.discard(wd)
                self._removing = wd
            with contextlib.suppress(OSError):  # already gone with its directory
                self._inotify.rm_watch(wd)
            with self._lock:
                self._removing = None
                self._removed.notify_all()


class _Kind(enum.Enum):
    ROOT = "root"
    CONTAINER = "container"  # Slurm hash.N; Torque 0-9 subdirectory; Grid Engine jobs/...
    JOB = "job"  # Slurm job.<id>; Grid Engine array job jobs/00/0000/0011/
    SCRIPTS = "scripts"  # Grid Engine job_scripts/


@dataclass(frozen=True, slots=True)
class _Watch:
    path: Path
    kind: _Kind
    job: JobRef | None = None
    relative: str = "."  # path relative to the spool: computed once, not per event


@dataclass(frozen=True, slots=True)
class Rejected:
    """Something in the spool that is not a job the watcher can follow (a planted symlink)."""

    path: Path
    reason: str


@dataclass(slots=True)
class SpoolChanges:
    touched: list[JobRef] = field(default_factory=list)  # detected, or a file completed
    gone: list[JobRef] = field(default_factory=list)  # the job's directory or script removed
    # A file of the job was written that completes it if it is pending (Grid Engine's
    # script): read it again then; not a detection.
    updated: list[JobRef] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    full_scan: bool = False  # `touched` lists every job in the spool
    overflow: bool = False  # the kernel dropped events (a full scan followed)
    spool_lost: bool = False  # the spool directory went away; start() again when it is back
    watch_failures: int = 0  # directory watches refused by the kernel's limits

    def merge(self, other: SpoolChanges) -> None:
        self.touched.extend(other.touched)
        self.gone.extend(other.gone)
        self.updated.extend(other.updated)
        self.rejected.extend(other.rejected)
        self.full_scan = self.full_scan or other.full_scan
        self.overflow = self.overflow or other.overflow
        self.spool_lost = self.spool_lost or other.spool_lost
        self.watch_failures += other.watch_failures


class SpoolWatcher:
    """Watches one spool; start() once the spool exists, then read() whenever fileno() is
    readable. The constructor touches nothing."""

    def __init__(self, scheduler: Scheduler, spool: Path, torque_subdirs: bool = False,
                 inotify_factory: Callable[[], InotifyLike] = INotify) -> None:
        self.scheduler = scheduler
        self.spool = spool
        self._factory = inotify_factory
        self._inotify: InotifyLike | None = None
        self._remover: _WatchRemover | None = None
        self._watches: dict[int, _Watch] = {}
        self._job_watches: dict[JobRef, int] = {}
        # Directories whose watch was refused: retried by retry_watches(), scanned once added.
        self._unwatched: dict[Path, _Kind] = {}
        self.follow_torque_subdirs = torque_subdirs

    @property
    def degraded(self) -> bool:
        """Some directory of the spool is not watched (yet): call retry_watches()."""
        return bool(self._unwatched)

    @property
    def started(self) -> bool:
        return self._inotify is not None

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def fileno(self) -> int | None:
        return self._inotify.fileno() if self._inotify is not None else None

    def start(self) -> SpoolChanges | None:
        """Watch and scan the whole spool; None while the spool directory does not exist
        (the caller polls for it)."""
        if not self.spool.is_dir():
            return None
        if self._inotify is None:
            self._inotify = self._factory()
            self._remover = _WatchRemover(self._inotify)
        self._detect_torque_subdirs()
        changes = self.rescan()
        if changes.spool_lost:
            self.close()
            return None
        return changes

    def rescan(self) -> SpoolChanges:
        """List the whole spool again (after lost events)."""
        changes = SpoolChanges(full_scan=True)
        if (not self._add_directory(self.spool, _Kind.ROOT, changes)
                and self.spool not in self._unwatched):
            changes.spool_lost = True
            return changes
        self._scan(self.spool, _Kind.ROOT, changes)
        return changes

    def retry_watches(self) -> SpoolChanges:
        """Add the watches the kernel refused again; each directory watched now is listed
        (watch-then-scan), so no job created while it was unwatched is missed."""
        if self._inotify is None or not self._unwatched:
            return SpoolChanges()
        if self.spool in self._unwatched:
            return self.rescan()  # the spool itself: everything under it is listed again
        changes = SpoolChanges()
        for path, kind in list(self._unwatched.items()):
            if self._add_directory(path, kind, changes):
                log.info("watching %s now", path)
                self._scan(path, kind, changes)
        return changes

    def read(self) -> SpoolChanges:
        """Everything the kernel queued since the last read; does not block."""
        changes = SpoolChanges()
        if self._inotify is None:
            return changes
        overflow = False
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            watch = self._watches.get(event.wd)
            if watch is not None:
                self._handle(watch, event.wd, event.mask, event.name, changes)
        if changes.spool_lost:
            self.close()
            return changes
        if overflow:
            log.warning("inotify queue overflowed: events were lost, rescanning %s", self.spool)
            changes.overflow = True
            changes.merge(self.rescan())
        return changes

    def watch_job(self, job: JobRef) -> bool:
        """Watch a Slurm job directory (a Grid Engine array job's directory) for its files'
        close-writes and renames, before reading it.

        Returns False when the kernel's watch limit refused it: the job is then only found
        complete by re-checking it on a timer. Other failures (the directory vanished, it is
        a symlink, a Grid Engine record that is a file and needs no watch) are the read's to
        report.
        """
        if self._inotify is None or job in self._job_watches:
            return True
        if job.scheduler is Scheduler.GRIDENGINE and job.base is not None:
            directory = job.directory / job.base
        elif job.base is None:
            directory = job.directory
        else:
            return True  # Torque: the files are in a watched directory
        try:
            wd = self._inotify.add_watch(str(directory), JOB_MASK)
            if self._remover is not None and not self._remover.claim(wd):
                wd = self._inotify.add_watch(str(directory), JOB_MASK)
        except OSError as exc:
            return exc.errno not in _LIMIT_ERRORS
        self._job_watches[job] = wd
        self._watches[wd] = _Watch(directory, _Kind.JOB, job)
        return True

    def release(self, job: JobRef) -> None:
        """The job is read (or given up): its directory's watch is no longer needed."""
        wd = self._job_watches.pop(job, None)
        if wd is None or self._remover is None:
            return
        self._watches.pop(wd, None)
        self._remover.remove(wd)

    def close(self) -> None:
        if self._remover is not None:
            self._remover.close()  # before the descriptor it uses is closed
        if self._inotify is not None:
            self._inotify.close()
        self._inotify = None
        self._remover = None
        self._watches.clear()
        self._job_watches.clear()
        self._unwatched.clear()

    # -- internals

    def _handle(self, watch: _Watch, wd: int, mask: int, name: str,
                changes: SpoolChanges) -> None:
        if mask & _SELF_GONE:
            if mask & flags.IGNORED:
                self._forget_watch(wd, watch)
            if watch.kind is _Kind.ROOT:
                log.warning("spool directory %s went away (%s)", self.spool,
                            "|".join(f.name for f in flags.from_mask(mask)))
                changes.spool_lost = True
            return
        if watch.kind is _Kind.JOB:
            if name in JOB_FILES.get(self.scheduler, ()) and watch.job is not None:
                changes.touched.append(watch.job)
            return
        if watch.kind is _Kind.SCRIPTS:
            job_id = script_job_id(name)
            if job_id is not None and mask & _WRITTEN:  # not its creation: still empty
                changes.updated.append(self._gridengine_job(record_path(job_id)))
            return
        path = watch.path / name
        if mask & _GONE:
            job = self._job_for(watch, name, gone=True)
            if job is not None:
                changes.gone.append(job)
            return
        kind = self._subdirectory_kind(watch.kind, watch.relative, name)
        if kind is not None:
            if self._add_directory(path, kind, changes):
                self._scan(path, kind, changes)
            return
        job = self._job_for(watch, name, gone=False)
        if job is not None:
            changes.touched.append(job)

    def _forget_watch(self, wd: int, watch: _Watch) -> None:
        self._watches.pop(wd, None)
        if watch.job is not None and self._job_watches.get(watch.job) == wd:
            del self._job_watches[watch.job]

    def _subdirectory_kind(self, kind: _Kind, relative: str, name: str) -> _Kind | None:
        """The watch a directory entry gets, if it is a directory the watcher follows."""
        if self.scheduler is Scheduler.GRIDENGINE:
            if kind is _Kind.ROOT and name == SCRIPTS_DIR:
                return _Kind.SCRIPTS
            if kind in (_Kind.ROOT, _Kind.CONTAINER) and is_jobs_level(relative, name):
                return _Kind.CONTAINER
            return None
        if kind is not _Kind.ROOT:
            return None
        if self.scheduler is Scheduler.SLURM:
            return _Kind.CONTAINER if SLURM_HASH_DIR.match(name) is not None else None
        follow = self.follow_torque_subdirs and name in TORQUE_SUBDIRS
        return _Kind.CONTAINER if follow else None

    def _gridengine_job(self, record: str) -> JobRef:
        """The Grid Engine job whose record is at this path below the spool."""
        leaf, _, name = record.rpartition("/")
        return JobRef(Scheduler.GRIDENGINE, record, self.spool / leaf, name)

    def _detect_torque_subdirs(self) -> None:
        """Torque keeps its job files in 0-9 subdirectories but --torque-subdirs is off:
        follow them anyway, or every job in them would be skipped without a word."""
        if self.scheduler is not Scheduler.TORQUE or self.follow_torque_subdirs:
            return
        holding = sorted(name for name in TORQUE_SUBDIRS if _holds_torque_jobs(self.spool / name))
        if holding:
            log.warning("%s holds Torque job files in its subdirectories %s but torque-subdirs"
                        " is not set: following them; set --torque-subdirs (torque-subdirs ="
                        " true) to say so", self.spool, ", ".join(holding))
            self.follow_torque_subdirs = True

    def _job_for(self, watch: _Watch, name: str, *, gone: bool) -> JobRef | None:
        """The job a directory entry belongs to, by the spool's naming rules; None for
        anything else (Slurm's own state files, Torque's temporary files)."""
        relative = watch.relative
        if self.scheduler is Scheduler.GRIDENGINE:
            return self._gridengine_record(watch, name)
        if self.scheduler is Scheduler.SLURM:
            if watch.kind is not _Kind.CONTAINER or not name.startswith(SLURM_JOB_PREFIX):
                return None
            return JobRef(Scheduler.SLURM, f"{relative}/{name}", watch.path / name)
        if gone and not name.endswith(TORQUE_SCRIPT_SUFFIX):
            return None  # Torque rewrites .JB files all the time; the script goes last
        base = torque_job_base(name)
        if base is None:
            return None
        prefix = "" if watch.kind is _Kind.ROOT else f"{relative}/"
        return JobRef(Scheduler.TORQUE, prefix + base, watch.path, base)

    @staticmethod
    def _gridengine_record(watch: _Watch, name: str) -> JobRef | None:
        """The job whose record (file or array job's directory) this entry is."""
        if watch.kind is not _Kind.CONTAINER or not is_record_entry(watch.relative, name):
            return None
        return JobRef(Scheduler.GRIDENGINE, f"{watch.relative}/{name}", watch.path, name)

    def _add_directory(self, path: Path, kind: _Kind, changes: SpoolChanges) -> bool:
        assert self._inotify is not None
        writes_files = kind is _Kind.SCRIPTS or self.scheduler is Scheduler.TORQUE
        mask = FILES_DIRECTORY_MASK if writes_files else DIRECTORY_MASK
        try:
            wd = self._inotify.add_watch(str(path), mask)
        except OSError as exc:
            self._watch_refused(path, kind, exc, changes)
            return False
        self._unwatched.pop(path, None)
        self._watches[wd] = _Watch(path, kind, relative=str(path.relative_to(self.spool)))
        return True

    def _watch_refused(self, path: Path, kind: _Kind, exc: OSError,
                       changes: SpoolChanges) -> None:
        """Sort a refused watch: retried later (kept in _unwatched), rejected, or not for
        the watcher to follow (gone; the spool itself unusable: the service waits for it)."""
        limit = exc.errno in _LIMIT_ERRORS
        if exc.errno == errno.ENOTDIR and path.is_symlink():
            changes.rejected.append(Rejected(path, REASON_SYMLINK))
        elif exc.errno == errno.ENOENT and kind is not _Kind.ROOT:
            pass  # removed meanwhile: nothing to follow
        elif kind is _Kind.ROOT and not limit:
            log.warning("cannot watch %s: %s", path, exc.strerror)  # the spool counts as lost
        else:
            changes.watch_failures += 1
            if path not in self._unwatched:  # logged once, not per retry
                hint = " (raise fs.inotify.max_user_watches)" if limit else ""
                log.error("cannot watch %s: %s%s; retrying, and listing it once watched",
                          path, exc.strerror, hint)
            self._unwatched[path] = kind
            return
        self._unwatched.pop(path, None)

    def _scan(self, directory: Path, kind: _Kind, changes: SpoolChanges) -> None:
        if kind is _Kind.SCRIPTS:
            return  # a script is no job of its own: its record is (found in jobs/)
        try:
            with os.scandir(directory) as entries:
                names = [e.name for e in entries]
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot list %s: %s", directory, exc.strerror)
            return
        watch = _Watch(directory, kind, relative=str(directory.relative_to(self.spool)))
        seen: set[JobRef] = set()
        for name in sorted(names):
            subdirectory = self._subdirectory_kind(kind, watch.relative, name)
            if subdirectory is not None:
                path = directory / name
                if self._add_directory(path, subdirectory, changes):
                    self._scan(path, subdirectory, changes)
                continue
            job = self._job_for(watch, name, gone=False)
            if job is not None and job not in seen:  # Torque: several files per job
                seen.add(job)
                changes.touched.append(job)


def _holds_torque_jobs(directory: Path) -> bool:
    """Whether a directory (not a symlink) holds files named like Torque's job files."""
    try:
        if directory.is_symlink() or not directory.is_dir():
            return False
        with os.scandir(directory) as entries:
            return any(torque_job_base(entry.name) is not None for entry in entries)
    except OSError:
        return False
