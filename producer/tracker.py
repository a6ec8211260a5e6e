"""Which detected jobs to read now, which to re-check later, and when to give up: pure.

A job is read as soon as it is detected or touched (a close-write of one of its files). If its
files are not complete yet it is re-checked on the next touch or, failing that, on a timer
that backs off from `first_retry` to `max_retry` seconds, so a job whose events were lost
(no watch, full inotify queue) is still found without any fixed sleep. It is given up as
incomplete once it has stayed incomplete for `ready_timeout` seconds. A job handed to a reader
process is not due until its answer comes back; a touch meanwhile means "read it again at once
if that answer is incomplete". Times are monotonic seconds passed in by the caller, so all of
this is testable without a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

JobT = TypeVar("JobT", bound=Hashable)


@dataclass(slots=True)
class _PendingJobState:
    incomplete_since: float | None = None
    retry_delay: float = 0.0
    retry_at: float | None = None  # None: due now
    reading: bool = False  # handed to a reader, no answer yet
    touched_while_reading: bool = False


class PendingJobs(Generic[JobT]):
    """Jobs detected but not yet turned into an outbox entry or given up."""

    def __init__(self, ready_timeout: float, first_retry: float = 0.05,
                 max_retry: float = 1.0) -> None:
        self.ready_timeout = ready_timeout
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._pending: dict[JobT, _PendingJobState] = {}
        self._due: dict[JobT, None] = {}  # insertion-ordered set: oldest detection first
        self._timers: list[tuple[float, int, JobT]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, job: object) -> bool:
        return job in self._pending

    def touch(self, job: JobT) -> bool:
        """The job was detected or one of its files changed: read it at the next turn.

        Returns True when the job was not pending before (a new detection).
        """
        state = self._pending.get(job)
        is_new = state is None
        if state is None:
            state = self._pending[job] = _PendingJobState()
        if state.reading:
            # The read under way may have missed this change: if it finds the job
            # incomplete, read it again at once.
            state.touched_while_reading = True
            return is_new
        state.retry_at = None
        self._due[job] = None
        return is_new

    def reading(self, job: JobT) -> None:
        """The job was handed to a reader: not due until it is reported back as done(),
        incomplete() or again()."""
        state = self._pending[job]
        state.reading = True
        state.touched_while_reading = False
        state.retry_at = None
        self._due.pop(job, None)

    def is_reading(self, job: JobT) -> bool:
        state = self._pending.get(job)
        return state is not None and state.reading

    def again(self, job: JobT) -> None:
        """The job's read was fine but could not be kept (e.g. the outbox refused it): due
        again, with no backoff."""
        state = self._pending[job]
        state.reading = False
        state.retry_at = None
        self._due[job] = None

    def due(self, now: float, limit: int | None = None) -> list[JobT]:
        """Jobs to read now, oldest first; each must be handed over with reading() or reported
        back as done() or incomplete(); jobs not reported stay due."""
        while self._timers and self._timers[0][0] <= now:
            at, _, job = heapq.heappop(self._timers)
            state = self._pending.get(job)
            if state is not None and state.retry_at == at:
                state.retry_at = None
                self._due[job] = None
        return list(itertools.islice(self._due, limit))

    def incomplete(self, job: JobT, now: float) -> bool:
        """The job's files were not complete yet. Returns False when it has been incomplete
        for ready_timeout seconds: the caller gives up on it (and calls done())."""
        state = self._pending[job]
        touched = state.touched_while_reading
        state.reading = state.touched_while_reading = False
        if state.incomplete_since is None:
            state.incomplete_since = now
        elif now - state.incomplete_since >= self.ready_timeout:
            return False
        if touched:
            state.retry_at = None
            self._due[job] = None
            return True
        state.retry_delay = min(self.max_retry, max(self.first_retry, state.retry_delay * 2))
        # Never wait past the deadline itself: the last check happens right at it.
        state.retry_at = min(now + state.retry_delay, state.incomplete_since + self.ready_timeout)
        self._due.pop(job, None)
        heapq.heappush(self._timers, (state.retry_at, next(self._sequence), job))
        return True

    def done(self, job: JobT) -> None:
        """The job was read (or failed for good, or vanished): forget it."""
        self._pending.pop(job, None)
        self._due.pop(job, None)

    def next_wakeup(self) -> float | None:
        """Monotonic time of the next re-check (0.0 when some job is due now), or None."""
        if self._due:
            return 0.0
        while self._timers:
            at, _, job = self._timers[0]
            state = self._pending.get(job)
            if state is not None and state.retry_at == at:
                return at
            heapq.heappop(self._timers)  # stale: the job was touched again or is done
        return None

    def jobs(self) -> list[JobT]:
        return list(self._pending)
