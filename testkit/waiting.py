"""One way to wait for something to happen: poll a condition until it holds or time is up."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL = 0.05


class WaitTimeoutError(AssertionError):
    """What was waited for did not happen in time (an AssertionError: a test fails on it)."""


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *,
               interval: float = POLL_INTERVAL,
               context: Callable[[], str] | None = None) -> None:
    """Return once `condition()` holds; raise WaitTimeoutError naming `what` (and `context()`,
    say a log tail) when it still does not after `timeout` seconds. The condition may raise
    to give up early (a process it depends on has died)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise WaitTimeoutError(f"timed out after {timeout:g} s waiting until {what}{detail}")
        time.sleep(interval)  # the polling interval, not a synchronisation
