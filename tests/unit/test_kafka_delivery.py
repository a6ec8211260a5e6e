"""The Kafka adapter: librdkafka errors become our failure kinds; a fatal producer is replaced
and nothing it held is lost; the shutdown ends with a bounded flush; the service around it
follows a spool directory whose watch was refused at first. confluent_kafka.Producer is
replaced by a scripted stand-in at the adapter's factory seam (no broker in unit tests; the
integration tests use the real one)."""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from producer.config import ProducerConfig, kafka_producer_properties, load_producer_config
from producer.delivery import (
    FailureKind,
    KafkaDelivery,
    ProduceRejectedError,
    QueueFullError,
    classify,
)
from producer.service import ProducerService
from producer.state_dir import StateDir
from testkit.waiting import wait_until

if TYPE_CHECKING:  # the fixture's type, for mypy alone
    from tests.unit.conftest import ScriptedProducer


@pytest.mark.parametrize(("error", "kind"), [
    (KafkaError(KafkaError._MSG_TIMED_OUT), FailureKind.TIMED_OUT),
    (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), FailureKind.TOO_LARGE),
    (KafkaError(KafkaError.RECORD_LIST_TOO_LARGE), FailureKind.TOO_LARGE),
    (KafkaError(KafkaError._PURGE_INFLIGHT), FailureKind.PURGED),
    (KafkaError(KafkaError._TRANSPORT, retriable=True), FailureKind.RETRIABLE),
    (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), FailureKind.REJECTED),
    (KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True), FailureKind.FATAL),
])
def test_librdkafka_errors_are_classified_into_our_failure_kinds(error: KafkaError,
                                                                 kind: FailureKind) -> None:
    failure = classify(error)
    assert failure.kind is kind
    assert failure.code == error.name()


def test_buffer_error_is_retried_once_after_a_poll_then_reported_as_queue_full(
        scripted_producer: type[ScriptedProducer]) -> None:
    delivery: KafkaDelivery[str] = KafkaDelivery({}, "t", scripted_producer)
    assert scripted_producer.made == [], "the constructor creates no client"
    delivery.start()
    client = scripted_producer.made[0]
    client.buffer_errors = 1
    delivery.produce(b"k", b"v", [], "a")
    client.buffer_errors = 2
    with pytest.raises(QueueFullError):
        delivery.produce(b"k", b"v", [], "b")
    assert [(r.token, r.failure) for r in delivery.poll()] == [("a", None)]


def test_message_refused_by_produce_is_a_named_error_with_its_kind(
        scripted_producer: type[ScriptedProducer]) -> None:
    delivery: KafkaDelivery[str] = KafkaDelivery({}, "t", scripted_producer)
    delivery.start()
    with pytest.raises(ProduceRejectedError) as refused:
        delivery.produce(b"k", b"x" * 2000, [], "big")
    assert refused.value.failure.kind is FailureKind.TOO_LARGE


def test_a_fatal_error_raised_by_poll_becomes_the_fatal_error_that_replaces_the_producer(
        scripted_producer: type[ScriptedProducer]) -> None:
    """As an idempotent producer refused its producer id by the broker's ACLs does."""
    delivery: KafkaDelivery[str] = KafkaDelivery({}, "t", scripted_producer)
    delivery.start()
    refused = KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED, "Failed to acquire"
                         " idempotence PID", fatal=True)

    def raising_poll(timeout: float = 0) -> int:
        raise KafkaException(refused)

    scripted_producer.made[0].poll = raising_poll  # type: ignore[method-assign]  # scripted
    refusals: list[str | None] = []
    delivery.on_access_failure = lambda failure: refusals.append(failure.access)
    assert delivery.poll(0) == []
    assert delivery.fatal_error is not None
    assert delivery.fatal_error.kind is FailureKind.FATAL
    assert refusals == ["authorization"], "counted like the same error through error_cb"


def test_restart_reports_what_the_old_producer_held_as_purged(
        scripted_producer: type[ScriptedProducer]) -> None:
    delivery: KafkaDelivery[str] = KafkaDelivery({}, "t", scripted_producer)
    delivery.start()
    scripted_producer.made[0].holding = True
    delivery.produce(b"k", b"v", [], "held")
    reports = delivery.restart()
    assert scripted_producer.made[0].purged and len(scripted_producer.made) == 2
    assert [(r.token, r.failure and r.failure.kind) for r in reports] == [
        ("held", FailureKind.PURGED)]


def test_service_replaces_a_fatally_failed_producer_and_delivers_everything(
        tmp_path: Path, synthetic_spool: Any, scripted_producer: type[ScriptedProducer]) -> None:
    """Generation 0 fails every message with a fatal error; generation 1 acknowledges."""
    scripted_producer.outcomes = [
        KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True), None]
    for job_id in range(1, 6):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n")
    config = load_producer_config(
        ["--cluster", "c", "--spool", str(synthetic_spool.root), "--state-dir",
         str(tmp_path / "state"), "--retry-interval", "0.05"], environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              producer_factory=scripted_producer)
    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    thread.start()
    try:
        wait_until(lambda: (registry.get_sample_value("sarchive_producer_jobs_published_total")
                            or 0) >= 5, 10, "every job is acknowledged")
    finally:
        service.request_stop()
        thread.join(10)
    assert registry.get_sample_value("sarchive_producer_kafka_producer_restarts_total") == 1
    assert (registry.get_sample_value(
        "sarchive_producer_delivery_failures_total", {"kind": "fatal"}) or 0) >= 1
    assert registry.get_sample_value("sarchive_producer_outbox_events") == 0


def test_full_outbox_holds_new_jobs_in_the_spool_loudly_and_takes_them_once_freed(
        tmp_path: Path, synthetic_spool: Any, scripted_producer: type[ScriptedProducer],
        caplog: pytest.LogCaptureFixture) -> None:
    for job_id in range(1, 8):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n")
    config = load_producer_config(
        ["--cluster", "c", "--spool", str(synthetic_spool.root), "--state-dir",
         str(tmp_path / "state"), "--outbox-max-events", "3"], environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              producer_factory=scripted_producer)
    scripted_producer.start_holding = True  # the broker acknowledges nothing for now

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    with caplog.at_level(logging.ERROR, logger="producer.outbox_gate"):
        thread.start()
        try:
            # 3 in the outbox, the other 4 waiting in the spool: held back, not dropped.
            wait_until(lambda: (value("sarchive_producer_outbox_full"),
                                value("sarchive_producer_outbox_events"),
                                value("sarchive_producer_pending_jobs")) == (1, 3, 4), 10,
                       "3 jobs in the full outbox and 4 held in the spool")
            assert value("sarchive_producer_outbox_full_events_total") == 1
            scripted_producer.made[0].holding = False
            wait_until(lambda: (value("sarchive_producer_jobs_published_total"),
                                value("sarchive_producer_outbox_full")) == (7, 0), 10,
                       "all 7 jobs published and the outbox no longer full")
        finally:
            service.request_stop()
            thread.join(10)
    assert any("OUTBOX FULL" in r.getMessage() for r in caplog.records)


def run_in_thread(service: ProducerService) -> tuple[threading.Thread, list[int]]:
    """The service's run() on a thread of its own; the list receives its exit code."""
    exit_codes: list[int] = []
    thread = threading.Thread(
        target=lambda: exit_codes.append(service.run(install_signals=False)))
    thread.start()
    return thread, exit_codes


def three_events_in_flight(
        tmp_path: Path, synthetic_spool: Any, scripted_producer: type[ScriptedProducer],
        shutdown_timeout: str,
) -> tuple[ProducerConfig, CollectorRegistry, ProducerService,
           tuple[threading.Thread, list[int]]]:
    """A producer running in a thread with three jobs' events handed to a producer that
    holds them (no delivery report yet)."""
    for job_id in range(1, 4):
        synthetic_spool.write_job(job_id, b"#!/bin/sh\n")
    config = load_producer_config(
        ["--cluster", "c", "--spool", str(synthetic_spool.root), "--state-dir",
         str(tmp_path / "state"), "--shutdown-timeout", shutdown_timeout], environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              producer_factory=scripted_producer)
    scripted_producer.start_holding = True
    running = run_in_thread(service)
    try:
        wait_until(lambda: bool(scripted_producer.made)
                   and len(scripted_producer.made[0].queue) == 3, 10, "3 events in flight")
    except BaseException:
        service.request_stop()
        running[0].join(10)
        raise
    return config, registry, service, running


def test_shutdown_flushes_what_is_in_flight_and_acknowledged_events_leave_the_outbox(
        tmp_path: Path, synthetic_spool: Any, scripted_producer: type[ScriptedProducer]) -> None:
    """poll() gets no answer; the shutdown's flush does: every event is acknowledged."""
    _, registry, service, (thread, exit_codes) = three_events_in_flight(
        tmp_path, synthetic_spool, scripted_producer, shutdown_timeout="5")
    service.request_stop()
    thread.join(10)
    assert exit_codes == [0]
    producer = scripted_producer.made[0]
    assert producer.flushes and all(0 < t <= 5 for t in producer.flushes)
    assert registry.get_sample_value("sarchive_producer_jobs_published_total") == 3
    assert registry.get_sample_value("sarchive_producer_outbox_events") == 0


def test_shutdown_flush_is_bounded_by_the_shutdown_timeout_and_unanswered_events_stay(
        tmp_path: Path, synthetic_spool: Any, scripted_producer: type[ScriptedProducer]) -> None:
    config, registry, service, (thread, exit_codes) = three_events_in_flight(
        tmp_path, synthetic_spool, scripted_producer, shutdown_timeout="0.5")
    try:
        scripted_producer.made[0].silent = True
    finally:
        stop_requested = time.monotonic()
        service.request_stop()
        thread.join(10)
    assert exit_codes == [0]
    assert time.monotonic() - stop_requested < 3, "the flush outlasted --shutdown-timeout"
    assert 0 < sum(scripted_producer.made[0].flushes) <= 0.5 + 1e-6
    assert registry.get_sample_value("sarchive_producer_jobs_published_total") == 0
    assert registry.get_sample_value("sarchive_producer_outbox_events") == 3
    reopened = StateDir(tmp_path / "state", config.outbox_max_bytes, config.outbox_max_events)
    reopened.open()
    try:
        assert len(reopened.outbox.recovered) == 3, "the next start replays them"
    finally:
        reopened.close()


def test_service_retries_a_refused_hash_dir_watch_and_delivers_its_job_once_watched(
        tmp_path: Path, synthetic_spool: Any, scripted_inotify: Any,
        scripted_producer: type[ScriptedProducer]) -> None:
    """Permission denied on hash.4 when it appears (EACCES, scripted: root is never refused):
    counted, retried on the back-off timer, and its job delivered once the watch is added."""
    inotify = scripted_inotify()
    inotify.refusal = errno.EACCES
    inotify.refuse_watches_under = synthetic_spool.root / "hash.4"
    config = load_producer_config(
        ["--cluster", "c", "--spool", str(synthetic_spool.root), "--state-dir",
         str(tmp_path / "state")], environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              inotify_factory=scripted_inotify,
                              producer_factory=scripted_producer)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0

    thread, _ = run_in_thread(service)
    try:
        wait_until(lambda: service.watcher.started, 10, "the spool watched")
        synthetic_spool.write_job(4, b"#!/bin/sh\n")
        failures = "sarchive_producer_watch_failures_total"
        wait_until(lambda: value(failures, level="directory") >= 2, 10, "the watch retried")
        assert value("sarchive_producer_jobs_detected_total") == 0
        inotify.refuse_watches_under = None
        wait_until(lambda: value("sarchive_producer_jobs_published_total") == 1, 10,
                   "the job delivered")
    finally:
        service.request_stop()
        thread.join(10)
