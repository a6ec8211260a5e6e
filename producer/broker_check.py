"""Whether a broker answers, asked periodically off the loop's thread.

Delivery reports tell only while events flow: with nothing submitted, a dead broker would go
unnoticed until the next job. A cheap metadata request for the topic every few seconds, on a
thread of its own (it blocks up to its timeout while no broker answers), keeps the
`sarchive_producer_broker_up` gauge true either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import Gauge

BROKER_CHECK_INTERVAL = 10.0
BROKER_CHECK_TIMEOUT = 5.0


class BrokerCheck:
    """Sets `gauge` to 1 or 0 by check(timeout) every interval seconds, from start() to
    stop(). The constructor starts nothing."""

    def __init__(self, check: Callable[[float], bool], gauge: Gauge,
                 interval: float = BROKER_CHECK_INTERVAL,
                 timeout: float = BROKER_CHECK_TIMEOUT) -> None:
        self._check = check
        self._gauge = gauge
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="broker-check", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread; waits for a check under way (at most its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._gauge.set(1 if self._check(self.timeout) else 0)
            self._stop.wait(self.interval)
