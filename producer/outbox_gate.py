"""Whether the producer may read new jobs into the outbox: its back-pressure.

New jobs are read only while the outbox is below both of its bounds and no write error is
being waited out; until then they stay in the spool, where the scheduler keeps them. The
queries (can_read, can_keep, next_wakeup) have no side effects: they depend on the gate's
state, the time and the outbox's fill, all passed in. The state changes only in update(),
which the loop calls once per turn and which logs and counts a full outbox, and in
pause_after_write_error().
"""

from __future__ import annotations

import logging
from typing import Protocol

from prometheus_client import Counter

log = logging.getLogger(__name__)

WRITE_ERROR_PAUSE = 5.0  # after an outbox write error, before reading jobs again
FULL_LOG_INTERVAL = 60.0  # how often a full outbox is logged again while it stays full


class OutboxFill(Protocol):
    """How full the outbox is (producer.outbox.Outbox is one)."""

    @property
    def max_events(self) -> int: ...

    @property
    def max_bytes(self) -> int: ...

    @property
    def events(self) -> int: ...

    @property
    def disk_bytes(self) -> int: ...

    def has_room(self) -> bool: ...


class OutboxGate:
    """Back-pressure state: the outbox full (as of the last update), reading paused after a
    write error until a monotonic time."""

    def __init__(self, full_events: Counter, write_error_pause: float = WRITE_ERROR_PAUSE,
                 full_log_interval: float = FULL_LOG_INTERVAL) -> None:
        self.write_error_pause = write_error_pause
        self.full_log_interval = full_log_interval
        self.full = False
        self.paused_until = 0.0
        self._full_events = full_events
        self._last_full_log = 0.0

    def can_keep(self, now: float) -> bool:
        """Whether a read job's event may be appended now."""
        return now >= self.paused_until

    def can_read(self, now: float, outbox: OutboxFill) -> bool:
        """Whether new jobs may be handed to the readers now."""
        return self.can_keep(now) and outbox.has_room()

    def next_wakeup(self, now: float) -> float | None:
        """When reading resumes by itself: the end of a write error's pause. A full outbox
        makes room only through acknowledgements, which have wake-ups of their own."""
        return self.paused_until if self.paused_until > now else None

    def pause_after_write_error(self, now: float) -> None:
        """An append failed (disk full, I/O error): keep and read no jobs for a while."""
        self.paused_until = now + self.write_error_pause

    def update(self, now: float, outbox: OutboxFill, waiting_jobs: int) -> None:
        """Take in the outbox's fill: log and count the moment it becomes full, log it again
        once per interval while it stays full, and the moment it has room again."""
        full = not outbox.has_room()
        if full != self.full:
            self.full = full
            if full:
                self._full_events.inc()
                self._log_full(now, outbox, waiting_jobs)
            else:
                log.info("outbox has room again: reading the waiting jobs")
        elif full and now - self._last_full_log >= self.full_log_interval:
            self._log_full(now, outbox, waiting_jobs)

    def _log_full(self, now: float, outbox: OutboxFill, waiting_jobs: int) -> None:
        self._last_full_log = now
        log.error("OUTBOX FULL: %d events, %d bytes on disk (bounds: %d events, %d bytes);"
                  " %d new jobs wait in the spool until the broker acknowledges events",
                  outbox.events, outbox.disk_bytes, outbox.max_events, outbox.max_bytes,
                  waiting_jobs)
