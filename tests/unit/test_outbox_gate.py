"""The outbox gate: when new jobs may be read, and the one step that logs and counts a full
outbox. Pure: the time and the outbox's fill are passed in."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter

from producer.outbox_gate import OutboxGate

FULL_EVENTS = "outbox_full_events_total"


@dataclass
class Fill:
    events: int = 0
    disk_bytes: int = 0
    max_events: int = 10
    max_bytes: int = 1000

    def has_room(self) -> bool:
        return self.events < self.max_events and self.disk_bytes < self.max_bytes


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def gate(registry: CollectorRegistry) -> OutboxGate:
    return OutboxGate(Counter("outbox_full_events", "", registry=registry),
                      write_error_pause=5.0, full_log_interval=60.0)


def full_logs(caplog: pytest.LogCaptureFixture) -> int:
    return sum("OUTBOX FULL" in record.getMessage() for record in caplog.records)


def test_jobs_are_read_while_the_outbox_has_room(gate: OutboxGate) -> None:
    assert gate.can_read(0.0, Fill(events=9))
    assert gate.can_keep(0.0)
    assert gate.next_wakeup(0.0) is None


@pytest.mark.parametrize("fill", [Fill(events=10), Fill(disk_bytes=1000)],
                         ids=["event-bound", "byte-bound"])
def test_no_job_is_read_at_either_bound_and_no_timer_is_set_for_it(gate: OutboxGate,
                                                                    fill: Fill) -> None:
    assert not gate.can_read(0.0, fill)
    assert gate.next_wakeup(0.0) is None, "only an acknowledgement makes room"


def test_queries_change_no_state_and_log_nothing(gate: OutboxGate, registry: CollectorRegistry,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    full = Fill(events=10)
    with caplog.at_level(logging.INFO, logger="producer.outbox_gate"):
        for now in (0.0, 100.0, 200.0):
            gate.can_read(now, full)
            gate.can_keep(now)
            gate.next_wakeup(now)
    assert not gate.full
    assert registry.get_sample_value(FULL_EVENTS) == 0
    assert caplog.records == []


def test_update_logs_and_counts_the_outbox_becoming_full_once(
        gate: OutboxGate, registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="producer.outbox_gate"):
        gate.update(100.0, Fill(events=10), waiting_jobs=4)
        gate.update(101.0, Fill(events=10), waiting_jobs=5)
    assert gate.full
    assert registry.get_sample_value(FULL_EVENTS) == 1
    assert full_logs(caplog) == 1
    assert "4 new jobs wait in the spool" in caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.ERROR


def test_a_full_outbox_is_logged_again_once_a_minute_while_it_stays_full(
        gate: OutboxGate, registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    full = Fill(events=10)
    with caplog.at_level(logging.ERROR, logger="producer.outbox_gate"):
        for now in (100.0, 130.0, 159.9, 160.0, 200.0, 220.0):
            gate.update(now, full, waiting_jobs=1)
    assert full_logs(caplog) == 3, "at 100, 160 and 220"
    assert registry.get_sample_value(FULL_EVENTS) == 1, "one event: it never had room"


def test_update_logs_room_again_and_a_later_full_outbox_counts_anew(
        gate: OutboxGate, registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="producer.outbox_gate"):
        gate.update(100.0, Fill(events=10), waiting_jobs=1)
        gate.update(101.0, Fill(events=3), waiting_jobs=1)
        assert not gate.full
        gate.update(102.0, Fill(events=10), waiting_jobs=1)
    assert any("room again" in record.getMessage() for record in caplog.records)
    assert registry.get_sample_value(FULL_EVENTS) == 2
    assert full_logs(caplog) == 2


def test_a_write_error_pauses_keeping_and_reading_until_its_pause_ends(
        gate: OutboxGate) -> None:
    gate.pause_after_write_error(100.0)
    assert not gate.can_keep(104.9)
    assert not gate.can_read(104.9, Fill())
    assert gate.next_wakeup(104.9) == 105.0
    assert gate.can_keep(105.0)
    assert gate.can_read(105.0, Fill())
    assert gate.next_wakeup(105.0) is None
