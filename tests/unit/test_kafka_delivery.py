"""The Kafka adapter: librdkafka errors become our failure kinds; a fatal producer is replaced
and nothing it held is lost. confluent_kafka.Producer is replaced by a scripted stand-in at
the adapter's factory seam (no broker in unit tests; the integration tests use the real one)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from producer.config import kafka_producer_properties, load_producer_config
from producer.delivery import (
    FailureKind,
    KafkaDelivery,
    ProduceRejectedError,
    QueueFullError,
    classify,
)
from producer.service import ProducerService


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


class ScriptedProducer:
    """Stands in for confluent_kafka.Producer: queues messages, reports them on poll() with
    the outcome the test scripted for its generation."""

    made: ClassVar[list[ScriptedProducer]] = []
    outcomes: ClassVar[list[KafkaError | None]] = []  # per generation: every message's error
    start_holding: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.generation = len(ScriptedProducer.made)
        self.queue: list[Any] = []
        self.purged = False
        self.holding = ScriptedProducer.start_holding  # poll() reports nothing: a slow broker
        self.buffer_errors = 0
        ScriptedProducer.made.append(self)

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any,
                on_delivery: Any) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("queue full")
        if len(value) > 1000:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queue.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if self.holding:
            return 0
        callbacks, self.queue = self.queue, []
        error = ScriptedProducer.outcomes[min(self.generation, len(self.outcomes) - 1)]
        for callback in callbacks:
            callback(error, None)
        if error is not None and error.fatal() and callbacks:  # a message met the error
            self.config["error_cb"](error)
        return len(callbacks)

    def purge(self, **_flags: bool) -> None:
        self.purged = True
        callbacks, self.queue = self.queue, []
        for callback in callbacks:
            callback(KafkaError(KafkaError._PURGE_QUEUE), None)


@pytest.fixture
def scripted_producer() -> type[ScriptedProducer]:
    ScriptedProducer.made = []
    ScriptedProducer.outcomes = [None]
    ScriptedProducer.start_holding = False
    return ScriptedProducer


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
        deadline = time.monotonic() + 10
        while (registry.get_sample_value("sarchive_producer_jobs_published_total") or 0) < 5:
            assert time.monotonic() < deadline, "not every job was acknowledged"
            time.sleep(0.02)
    finally:
        service.request_stop()
        thread.join(10)
    assert registry.get_sample_value("sarchive_producer_kafka_producer_restarts_total") == 1
    assert registry.get_sample_value(
        "sarchive_producer_delivery_failures_total", {"kind": "fatal"}) >= 1
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

    def wait(condition: Any) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    with caplog.at_level(logging.ERROR, logger="producer.outbox_gate"):
        thread.start()
        try:
            # 3 in the outbox, the other 4 waiting in the spool: held back, not dropped.
            wait(lambda: (value("sarchive_producer_outbox_full"),
                          value("sarchive_producer_outbox_events"),
                          value("sarchive_producer_pending_jobs")) == (1, 3, 4))
            assert value("sarchive_producer_outbox_full_events_total") == 1
            scripted_producer.made[0].holding = False
            wait(lambda: (value("sarchive_producer_jobs_published_total"),
                          value("sarchive_producer_outbox_full")) == (7, 0))
        finally:
            service.request_stop()
            thread.join(10)
    assert any("OUTBOX FULL" in r.getMessage() for r in caplog.records)
