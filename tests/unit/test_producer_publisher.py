"""The publisher: an event leaves the outbox only on the broker's acknowledgement, a failed
delivery is produced again later, a fatal error recreates the Kafka producer. A fake stands in
for confluent_kafka.Producer at the delivery's factory seam; the outbox is a real one on disk.
Times are passed in: no clock, no sleep."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from producer.delivery import KafkaDelivery
from producer.event_meta import EventMeta
from producer.metrics import ProducerMetrics
from producer.outbox import OutboxEntry
from producer.publisher import Publisher
from producer.state_dir import StateDir

RETRY_INTERVAL = 10.0


class FakeProducer:
    """Holds produced messages until the test settles them: ack(), fail(error) or lose them
    (a purge that reports nothing, as a producer dead for good may)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.held: list[tuple[bytes, Any]] = []
        self.produced: list[bytes] = []
        self.purged = False
        self.purge_reports = True
        self.broker_answers = True

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any,
                on_delivery: Any) -> None:
        self.produced.append(key)
        self.held.append((key, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, topic: str, timeout: float) -> None:
        if not self.broker_answers:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    def settle(self, error: KafkaError | None) -> None:
        held, self.held = self.held, []
        for _key, on_delivery in held:
            on_delivery(error, None)

    def purge(self, **_flags: bool) -> None:
        self.purged = True
        if self.purge_reports:
            self.settle(KafkaError(KafkaError._PURGE_QUEUE))
        self.held = []


class FakeProducerFactory:
    def __init__(self) -> None:
        self.made: list[FakeProducer] = []

    def __call__(self, config: dict[str, Any]) -> FakeProducer:
        self.made.append(FakeProducer(config))
        return self.made[-1]


def meta(n: int) -> EventMeta:
    return EventMeta(job_key=f"c:slurm:{n}:1000", job_id=str(n), cluster="c",
                     submit_time_ms=1000 + n, spool_name=f"hash.{n % 10}/job.{n}")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    state = StateDir(tmp_path, outbox_max_bytes=1 << 20, outbox_max_events=100)
    state.open()
    yield state
    state.close()


@pytest.fixture
def factory() -> FakeProducerFactory:
    return FakeProducerFactory()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def publisher(state: StateDir, factory: FakeProducerFactory,
              registry: CollectorRegistry) -> Iterator[Publisher]:
    delivery: KafkaDelivery[OutboxEntry] = KafkaDelivery({}, "jobs", factory)
    publisher = Publisher(state, delivery, RETRY_INTERVAL, ProducerMetrics(registry))
    publisher.start()
    yield publisher
    publisher.close()


def append(state: StateDir, publisher: Publisher, n: int) -> OutboxEntry:
    entry = state.outbox.append(meta(n), f"event {n}".encode())
    state.outbox.commit()
    publisher.enqueue(entry)
    return entry


def test_acknowledged_event_leaves_the_outbox_and_joins_the_published_record(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry) -> None:
    append(state, publisher, 1)
    assert publisher.is_queued(meta(1).spool_name, meta(1).submit_time_ms)
    publisher.publish(0.0)
    assert state.outbox.events == 1, "produced, not yet acknowledged: still in the outbox"
    factory.made[0].settle(None)
    publisher.publish(0.1)
    assert state.outbox.events == 0
    assert state.published.is_published(meta(1).spool_name, meta(1).submit_time_ms)
    assert not publisher.is_queued(meta(1).spool_name, meta(1).submit_time_ms)
    assert registry.get_sample_value("sarchive_producer_jobs_published_total") == 1
    assert publisher.is_settled_until(float("inf"))


def test_failed_delivery_stays_in_the_outbox_and_is_produced_again_after_the_retry_interval(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry) -> None:
    append(state, publisher, 1)
    publisher.publish(0.0)
    factory.made[0].settle(KafkaError(KafkaError._MSG_TIMED_OUT))
    publisher.publish(1.0)
    producer = factory.made[0]
    assert state.outbox.events == 1
    assert not state.published.is_published(meta(1).spool_name, meta(1).submit_time_ms)
    assert registry.get_sample_value("sarchive_producer_delivery_failures_total",
                                     {"kind": "timed-out"}) == 1
    assert publisher.next_wakeup(2.0) == 1.0 + RETRY_INTERVAL
    publisher.publish(1.0 + RETRY_INTERVAL - 0.1)
    assert len(producer.produced) == 1, "not before its retry time"
    publisher.publish(1.0 + RETRY_INTERVAL)
    assert len(producer.produced) == 2
    producer.settle(None)
    publisher.publish(1.0 + RETRY_INTERVAL)
    assert state.outbox.events == 0


def test_fatal_error_recreates_the_producer_and_produces_what_it_held_again_on_the_new_one(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry) -> None:
    for n in (1, 2):
        append(state, publisher, n)
    publisher.publish(0.0)
    old = factory.made[0]
    old.purge_reports = False  # what it held is simply gone: in flight for the publisher
    old.config["error_cb"](KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True))
    publisher.publish(0.1)
    assert old.purged and len(factory.made) == 2
    assert registry.get_sample_value("sarchive_producer_kafka_producer_restarts_total") == 1
    assert state.outbox.events == 2, "the outbox keeps every event"
    publisher.publish(0.2)
    new = factory.made[1]
    assert new.produced == old.produced, "requeued at once, in their order"
    new.settle(None)
    publisher.publish(0.3)
    assert state.outbox.events == 0


def test_replay_queues_what_the_outbox_recovered_before_new_events(
        tmp_path: Path, factory: FakeProducerFactory, registry: CollectorRegistry) -> None:
    first = StateDir(tmp_path, outbox_max_bytes=1 << 20, outbox_max_events=100)
    first.open()
    first.outbox.append(meta(1), b"event 1")
    first.close()
    state = StateDir(tmp_path, outbox_max_bytes=1 << 20, outbox_max_events=100)
    state.open()
    try:
        delivery: KafkaDelivery[OutboxEntry] = KafkaDelivery({}, "jobs", factory)
        publisher = Publisher(state, delivery, RETRY_INTERVAL, ProducerMetrics(registry))
        publisher.start()
        publisher.replay_outbox()
        append(state, publisher, 2)
        publisher.publish(0.0)
        assert factory.made[0].produced == [b"c:slurm:1:1000", b"c:slurm:2:1000"]
        assert state.outbox.recovered == []
    finally:
        state.close()


def test_broker_answers_follows_the_metadata_request_and_an_acknowledgement_says_up(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry) -> None:
    producer = factory.made[0]
    assert publisher.delivery.broker_answers(0.1)
    producer.broker_answers = False
    assert not publisher.delivery.broker_answers(0.1)
    publisher.metrics.broker_up.set(0)
    append(state, publisher, 1)
    publisher.publish(0.0)
    producer.settle(None)
    publisher.publish(0.1)
    assert registry.get_sample_value("sarchive_producer_broker_up") == 1


def test_events_refused_by_an_acl_are_counted_named_once_and_kept_until_granted(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    for n in (1, 2, 3):
        append(state, publisher, n)
    publisher.publish(0.0)
    factory.made[0].settle(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    publisher.publish(1.0)
    assert state.outbox.events == 3
    assert registry.get_sample_value("sarchive_producer_kafka_access_failures_total",
                                     {"cause": "authorization"}) == 3
    named = [r for r in caplog.records if "not authorised to write topic jobs" in r.getMessage()]
    assert len(named) == 1, "one line for the refusal, not one per event"
    publisher.publish(1.0 + RETRY_INTERVAL)  # the ACL granted meanwhile: the retry succeeds
    factory.made[0].settle(None)
    publisher.publish(1.0 + RETRY_INTERVAL)
    assert state.outbox.events == 0


def test_authentication_failure_from_the_error_callback_is_counted_by_cause(
        publisher: Publisher, factory: FakeProducerFactory,
        registry: CollectorRegistry) -> None:
    factory.made[0].config["error_cb"](KafkaError(KafkaError._AUTHENTICATION,
                                                  "SASL authentication error"))
    assert registry.get_sample_value("sarchive_producer_kafka_access_failures_total",
                                     {"cause": "authentication"}) == 1
    assert registry.get_sample_value("sarchive_producer_kafka_access_failures_total",
                                     {"cause": "tls"}) == 0



def test_a_producer_refused_again_at_once_is_recreated_after_growing_delays_reset_by_an_ack(
        state: StateDir, publisher: Publisher, factory: FakeProducerFactory) -> None:
    refused: set[int] = set()

    def refuse_the_newest() -> None:
        """As ACLs refuse every new idempotent producer its producer id."""
        newest = factory.made[-1]
        if id(newest) not in refused:
            refused.add(id(newest))
            newest.config["error_cb"](
                KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED, fatal=True))

    def restarts_while_refused(times: list[float]) -> list[float]:
        restarts = []
        for now in times:
            refuse_the_newest()
            made = len(factory.made)
            publisher.publish(now)
            if len(factory.made) > made:
                restarts.append(now)
        return restarts

    append(state, publisher, 1)
    assert restarts_while_refused([n / 2 for n in range(16)]) == [0.0, 1.0, 3.0, 7.0], (
        "1, 2, 4 s apart, not every turn")
    assert publisher.next_wakeup(7.5) == 15.0
    publisher.publish(15.0)
    publisher.publish(15.1)  # the new producer is not refused: it takes the event
    factory.made[-1].settle(None)
    publisher.publish(15.2)
    assert state.outbox.events == 0
    assert restarts_while_refused([16.0, 16.5, 17.0]) == [16.0, 17.0], (
        "an acknowledgement resets the delays")
