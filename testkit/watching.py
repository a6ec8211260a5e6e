"""The producer's spool watcher read by a test: its changes merged over successive reads
until they satisfy the test, and the names of the jobs they list."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from producer.jobs import JobRef
from producer.watcher import SpoolChanges, SpoolWatcher
from testkit.waiting import wait_until


def names(jobs: Iterable[JobRef]) -> set[str]:
    return {job.name for job in jobs}


def read_until(watcher: SpoolWatcher, predicate: Callable[[SpoolChanges], object],
               timeout: float = 5.0) -> SpoolChanges:
    """The changes of successive reads, merged, once predicate(changes) holds."""
    total = SpoolChanges()

    def met() -> bool:
        total.merge(watcher.read())
        return bool(predicate(total))

    wait_until(met, timeout, "the watcher reports the expected changes", interval=0.01,
               context=lambda: f"changes so far: {total}")
    return total
