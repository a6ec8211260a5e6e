"""Which outbox entries to hand to the Kafka producer next: pure bookkeeping.

Entries are produced oldest first. At most `max_in_flight_bytes` (and messages) are handed to
librdkafka at a time, so a backlog of any size waits on disk instead of in memory. An entry
whose delivery failed waits `retry_interval` seconds, doubled per failure of that entry up to
`max_retry_delay`, before it is produced again: nothing is ever dropped, a broker down for hours
only means fewer attempts. Times are monotonic seconds passed in by the caller.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

EntryT = TypeVar("EntryT", bound=Hashable)

MAX_RETRY_DELAY = 600.0


class Dispatcher(Generic[EntryT]):
    def __init__(self, retry_interval: float, max_in_flight_bytes: int = 32 * 1024 * 1024,
                 max_in_flight_messages: int = 20_000,
                 max_retry_delay: float = MAX_RETRY_DELAY) -> None:
        self.retry_interval = retry_interval
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_in_flight_messages = max_in_flight_messages
        self.max_retry_delay = max_retry_delay
        self._sizes: dict[EntryT, int] = {}
        self._failures: dict[EntryT, int] = {}
        self._ready: deque[EntryT] = deque()
        self._in_flight: dict[EntryT, None] = {}
        self._in_flight_bytes = 0
        self._waiting: list[tuple[float, int, EntryT]] = []
        self._sequence = itertools.count()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """Entries waiting for a retry time."""
        return len(self._waiting)

    @property
    def ready(self) -> int:
        return len(self._ready)

    def add(self, entry: EntryT, size: int) -> None:
        self._sizes[entry] = size
        self._ready.append(entry)

    def next_to_send(self, now: float) -> EntryT | None:
        """The next entry to produce, if the in-flight bounds allow one; call sent() or
        unsent() with it."""
        self._release_due(now)
        if not self._ready:
            return None
        entry = self._ready[0]
        size = self._sizes[entry]
        if self._in_flight and (
                self._in_flight_bytes + size > self.max_in_flight_bytes
                or len(self._in_flight) >= self.max_in_flight_messages):
            return None  # a single entry larger than the bound still goes, alone
        return self._ready.popleft()

    def sent(self, entry: EntryT) -> None:
        self._in_flight[entry] = None
        self._in_flight_bytes += self._sizes[entry]

    def unsent(self, entry: EntryT) -> None:
        """The producer could not take the entry now: it is next again."""
        self._ready.appendleft(entry)

    def acked(self, entry: EntryT) -> None:
        self._leave_flight(entry)
        self._sizes.pop(entry, None)
        self._failures.pop(entry, None)

    def failed(self, entry: EntryT, now: float) -> float:
        """Delivery (or the produce call) failed: retry later. Returns the delay."""
        self._leave_flight(entry)
        failures = self._failures.get(entry, 0) + 1
        self._failures[entry] = failures
        delay = min(self.max_retry_delay, self.retry_interval * 2.0 ** min(failures - 1, 30))
        heapq.heappush(self._waiting, (now + delay, next(self._sequence), entry))
        return delay

    def requeue_in_flight(self) -> None:
        """The producer holding the in-flight entries is gone without reporting them: they
        are produced again first, without counting as failures."""
        entries = list(self._in_flight)
        for entry in entries:
            self._leave_flight(entry)
        self._ready.extendleft(reversed(entries))

    def next_wakeup(self) -> float | None:
        """Monotonic time at which a waiting entry becomes ready again, if any."""
        return self._waiting[0][0] if self._waiting else None

    def _release_due(self, now: float) -> None:
        due: list[EntryT] = []
        while self._waiting and self._waiting[0][0] <= now:
            due.append(heapq.heappop(self._waiting)[2])
        # Retried entries were produced before anything ready was: they go first, in order.
        self._ready.extendleft(reversed(due))

    def _leave_flight(self, entry: EntryT) -> None:
        if entry in self._in_flight:
            del self._in_flight[entry]
            self._in_flight_bytes -= self._sizes[entry]
