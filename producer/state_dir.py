"""The producer's state directory: its lock, the outbox and the published-jobs record.

    producer.lock    flock()ed while a producer runs: two producers on one outbox would
                     produce and acknowledge each other's events
    outbox/          the events not yet acknowledged (producer.outbox)
    published.jsonl  the jobs the broker acknowledged (producer.published)

The three are opened together by open() and closed together by close(); the constructor does
no I/O.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from producer.outbox import DEFAULT_SEGMENT_BYTES, Outbox, OutboxError
from producer.published import PublishedJobs
from runtime.errors import ConfigError, ServiceFatalError

OUTBOX_DIR = "outbox"
PUBLISHED_FILE = "published.jsonl"
LOCK_FILE = "producer.lock"
# Segments scale with the bound, so the outbox never holds more than ~130 files (and
# descriptors) open, however large it may grow.
SEGMENTS_PER_BOUND = 128
# A state directory that fails to be created or opened for these reasons is misconfigured (a
# path that cannot be one, no permission, a read-only file system): restarting cannot heal it,
# so it is a configuration error (exit 2). Anything else (a full disk, an I/O error) may heal.
_MISCONFIGURED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                            errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENAMETOOLONG})


class StateDirError(ServiceFatalError):
    """The state directory cannot be used (fatal: the producer does not start)."""


class StateDir:
    """The state directory at `path`, with the outbox's bounds."""

    def __init__(self, path: Path, outbox_max_bytes: int, outbox_max_events: int) -> None:
        self.path = path
        self.outbox_max_bytes = outbox_max_bytes
        self.outbox_max_events = outbox_max_events
        self._lock_fd: int | None = None
        self._outbox: Outbox | None = None
        self._published: PublishedJobs | None = None

    @property
    def outbox(self) -> Outbox:
        assert self._outbox is not None, "open() opens the outbox"
        return self._outbox

    @property
    def published(self) -> PublishedJobs:
        assert self._published is not None, "open() opens the published-jobs record"
        return self._published

    def open(self) -> None:
        """Lock the directory (creating it), then open the outbox, whose recovered events are
        then in outbox.recovered, and the published-jobs record. Raises ConfigError when the
        directory can never be used as configured, StateDirError when it cannot be used now
        (locked by another producer, a full disk)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.path / LOCK_FILE,
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in _MISCONFIGURED:
                raise ConfigError(f"state_dir {self.path}: cannot use it: {exc}") from exc
            raise StateDirError(f"cannot use state directory {self.path}: {exc}") from exc
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StateDirError(f"another sarchive-producer is using {self.path}") from exc
            try:
                segment_bytes = max(DEFAULT_SEGMENT_BYTES,
                                    self.outbox_max_bytes // SEGMENTS_PER_BOUND)
                self._outbox = Outbox.open(self.path / OUTBOX_DIR, self.outbox_max_bytes,
                                           self.outbox_max_events, segment_bytes)
                self._published = PublishedJobs.open(self.path / PUBLISHED_FILE)
            except OSError as exc:
                raise StateDirError(f"cannot open the state in {self.path}: {exc}") from exc
        except StateDirError:
            self.close()
            raise

    def close(self) -> None:
        """Commit and close the outbox, close the record, then release the lock."""
        if self._outbox is not None:
            with contextlib.suppress(OutboxError):
                self._outbox.commit()
            self._outbox.close()
        if self._published is not None:
            self._published.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._outbox = self._published = self._lock_fd = None
