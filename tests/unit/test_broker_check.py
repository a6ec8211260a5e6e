"""The producer's broker check: the broker_up gauge follows a metadata request asked
periodically off the loop's thread, so a dead broker shows while nothing is submitted."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Gauge

from producer.broker_check import BrokerCheck
from testkit.waiting import wait_until


def test_gauge_follows_the_broker_answering_then_not_and_stop_ends_the_thread() -> None:
    gauge = Gauge("broker_up", "test", registry=CollectorRegistry())
    answers = threading.Event()
    answers.set()
    timeouts: list[float] = []

    def check(timeout: float) -> bool:
        timeouts.append(timeout)
        return answers.is_set()

    broker_check = BrokerCheck(check, gauge, interval=0.01, timeout=0.5)
    broker_check.start()
    try:
        wait_until(lambda: gauge._value.get() == 1, 5, "the gauge says up")
        answers.clear()
        wait_until(lambda: gauge._value.get() == 0, 5, "the gauge says down")
        answers.set()
        wait_until(lambda: gauge._value.get() == 1, 5, "the gauge says up again")
    finally:
        broker_check.stop()
    checks = len(timeouts)
    assert set(timeouts) == {0.5}
    assert not any(t.name == "broker-check" for t in threading.enumerate())
    assert len(timeouts) == checks, "no check after stop()"
