"""Helpers shared by the unit tests: job events, and the scripted Kafka clients, sink and
clock that drive the consumer runner without Kafka (see test_consumer_runner.py)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from consumers.common.runner import ConsumerRunner
from consumers.common.settings import ConsumerSettings
from consumers.common.sink import Rejection
from consumers.common.topic_admin import (
    TopicAdminError,
    TopicAuthorizationError,
    TopicDescription,
    TopicExistsError,
)
from runtime.logs import RepeatFilter
from schemas.codec import JobEventCodec
from schemas.model import JobEvent, Scheduler, SpoolFile
from testkit.events import job_event


def torque_event(**overrides: Any) -> JobEvent:
    script = b"#!/bin/sh\n#PBS -N arr\necho $PBS_ARRAYID\n"
    defaults: dict[str, Any] = {
        "scheduler": Scheduler.TORQUE,
        "job_id": "2[].master",
        "script": script,
        "environment": b"",
        "spool_files": (
            SpoolFile("2[].master.SC", script),
            SpoolFile("2[].master.TA", b"task array"),
            SpoolFile("2-1.master.JB", b"job 1 binary record"),
        ),
        "job_name": "arr",
    }
    return job_event(**{**defaults, **overrides})


def gridengine_event(**overrides: Any) -> JobEvent:
    script = b"#!/bin/sh\n#$ -N hello\necho hello\n"
    defaults: dict[str, Any] = {
        "scheduler": Scheduler.GRIDENGINE,
        "job_id": "11",
        "script": script,
        "environment": b"HOME=/home/alice\0SECRET_TOKEN=<redacted>\0",
        "spool_files": (SpoolFile("script", script), SpoolFile("record", b"\0\0packed")),
        "job_name": "hello",
    }
    return job_event(**{**defaults, **overrides})


def record_with_variable(case: str, name: bytes, value: bytes = b"") -> bytes:
    """The real record of a fixture with its empty TERM entry renamed and given a value, as
    `qsub -v NAME=VALUE` packs that variable: still a whole record (strings are
    NUL-terminated, no length anywhere). Such an entry may spell other fields' bytes: `sge`
    with no value packs as `\\0sge\\0\\0`, as the account `sge` and the next field's first
    byte do; a one-letter name's pair occurs in the descriptor."""
    record = (Path(__file__).parent.parent / "fixtures" / "gridengine" / case
              / "record").read_bytes()
    assert record.count(b"\0TERM\0\0") == 1
    return record.replace(b"\0TERM\0\0", b"\0" + name + b"\0" + value + b"\0")


@pytest.fixture
def gridengine_record_with_variable() -> Callable[..., bytes]:
    return record_with_variable


@pytest.fixture
def make_event() -> Callable[..., JobEvent]:
    return job_event


@pytest.fixture
def make_torque_event() -> Callable[..., JobEvent]:
    return torque_event


@pytest.fixture
def make_gridengine_event() -> Callable[..., JobEvent]:
    return gridengine_event


# -- the producer's Kafka client without Kafka ------------------------------------------------

class ScriptedProducer:
    """Stands in for confluent_kafka.Producer: queues messages, reports them on poll() with
    the outcome the test scripted for its generation. flush() answers what is queued even
    while poll() holds (librdkafka's flush sends what lingers at once), unless the broker is
    silent: then it lets its whole timeout pass with nothing answered."""

    made: ClassVar[list[ScriptedProducer]] = []
    max_value_bytes: ClassVar[int] = 1000  # larger values are refused as too large
    outcomes: ClassVar[list[KafkaError | None]] = []  # per generation: every message's error
    start_holding: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.generation = len(ScriptedProducer.made)
        self.queue: list[Any] = []
        self.purged = False
        self.holding = ScriptedProducer.start_holding  # poll() reports nothing: a slow broker
        self.buffer_errors = 0
        self.silent = False
        self.flushes: list[float] = []
        ScriptedProducer.made.append(self)

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any,
                on_delivery: Any) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("queue full")
        if len(value) > ScriptedProducer.max_value_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queue.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if self.holding:
            return 0
        return self._answer()

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        if self.silent:
            time.sleep(timeout)  # the blocking call being faked, not a synchronisation
            return len(self.queue)
        self._answer()
        return 0

    def _answer(self) -> int:
        callbacks, self.queue = self.queue, []
        error = ScriptedProducer.outcomes[min(self.generation, len(self.outcomes) - 1)]
        for callback in callbacks:
            callback(error, None)
        if error is not None and error.fatal() and callbacks:  # a message met the error
            self.config["error_cb"](error)
        return len(callbacks)

    def list_topics(self, topic: str, timeout: float) -> None:
        """The broker check's metadata request: the scripted broker always answers."""

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
    ScriptedProducer.max_value_bytes = 1000
    return ScriptedProducer


# -- the consumer runner's world without Kafka ------------------------------------------------

Partition = tuple[str, int]


class FakeClock:
    """Monotonic seconds that move only when something waits (the scripted consumer)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeMessage:
    """What confluent_kafka.Consumer.consume() returns, as far as the runner reads it."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes,
                 timestamp_ms: int = 0) -> None:
        self._coordinates = (topic, partition, offset)
        self._value = value
        self._timestamp_ms = timestamp_ms

    def topic(self) -> str:
        return self._coordinates[0]

    def partition(self) -> int:
        return self._coordinates[1]

    def offset(self) -> int:
        return self._coordinates[2]

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        if not self._timestamp_ms:
            return confluent_kafka.TIMESTAMP_NOT_AVAILABLE, 0
        return confluent_kafka.TIMESTAMP_CREATE_TIME, self._timestamp_ms


Step = Callable[["ScriptedConsumer"], None]


class ScriptedConsumer:
    """A confluent_kafka.Consumer whose broker is a script.

    fetched: messages the client has fetched; consume() returns those of assigned partitions
    that are not paused. A consume() that finds nothing and would wait (timeout > 0) runs the
    next step of idle_steps (nothing paused) or paused_steps (something paused), then "waits"
    its timeout on the fake clock. With no idle step left it calls when_idle (the harness:
    request the runner's stop), so every script ends. journal records what the runner did, in
    order, shared with the sink and the dead-letter producer.
    """

    def __init__(self, clock: FakeClock, journal: list[str], partitions: list[Partition]) -> None:
        self.clock = clock
        self.journal = journal
        self.properties: dict[str, object] = {}
        self.refuse_properties = False
        self.to_assign = partitions
        self.assigned: list[Partition] = []
        self.paused: set[Partition] = set()
        self.fetched: list[FakeMessage] = []
        self.idle_steps: deque[Step] = deque()
        self.paused_steps: deque[Step] = deque()
        self.when_idle: Callable[[], None] = lambda: None
        self.paused_poll_timeouts: list[float] = []
        self.refuse_commits = 0  # the next this many commits fail (a rebalance in progress)
        self.committed: dict[Partition, int] = {}
        self.closed = False
        self._callbacks: dict[str, Callable[..., None]] = {}

    def __call__(self, properties: dict[str, object]) -> ScriptedConsumer:
        """The factory: the runner's consumer_factory. Refuses the properties, as librdkafka
        does an unknown one, when refuse_properties is set."""
        if self.refuse_properties:
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(confluent_kafka.KafkaError._INVALID_ARG))
        self.properties = properties
        return self

    def deliver(self, partition: Partition, *values: bytes) -> list[FakeMessage]:
        """Messages with the next offsets of the partition, fetched by the client."""
        first = sum(1 for m in self.fetched if (m.topic(), m.partition()) == partition)
        first += self.committed.get(partition, 0)
        messages = [FakeMessage(*partition, first + n, value) for n, value in enumerate(values)]
        self.fetched += messages
        return messages

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self._callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.to_assign:  # librdkafka calls on_assign from within the first poll
            self.assigned, self.to_assign = self.to_assign, []
            self._callbacks["on_assign"](self, self._topic_partitions(self.assigned))
        ready = [m for m in self.fetched if self._readable(m)][:num_messages]
        if ready:
            self.fetched = [m for m in self.fetched if m not in ready]
            return ready
        if timeout == 0:
            return []  # only taking what was fetched: no waiting, so no step
        if self.paused:
            self.paused_poll_timeouts.append(timeout)
            if self.paused_steps:
                self.paused_steps.popleft()(self)
        elif self.idle_steps:
            self.idle_steps.popleft()(self)
        else:
            self.when_idle()
        self.clock.advance(timeout)
        return []

    def _readable(self, message: FakeMessage) -> bool:
        partition = (message.topic(), message.partition())
        return partition in self.assigned and partition not in self.paused

    def revoke(self, *partitions: Partition) -> None:
        """A rebalance takes partitions away: on_revoke, then they and their fetched messages
        are gone (the new owner reads them)."""
        self._callbacks["on_revoke"](self, self._topic_partitions(list(partitions)))
        self.assigned = [p for p in self.assigned if p not in partitions]
        self.paused -= set(partitions)
        self.fetched = [m for m in self.fetched if (m.topic(), m.partition()) not in partitions]
        self.journal.append(f"revoked {sorted(partitions)}")

    def assignment(self) -> list[confluent_kafka.TopicPartition]:
        return self._topic_partitions(self.assigned)

    def pause(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        if not self.paused:
            self.journal.append("pause")
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}
        self.journal.append("resume")

    def commit(self, *, offsets: list[confluent_kafka.TopicPartition],
               asynchronous: bool) -> list[confluent_kafka.TopicPartition]:
        assert asynchronous is False  # the runner commits synchronously, always
        positions = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        if self.refuse_commits:
            self.refuse_commits -= 1
            self.journal.append(f"commit refused {positions}")
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS))
        self.committed.update(positions)
        self.journal.append(f"commit {positions}")
        return offsets

    def position(self, partitions: list[confluent_kafka.TopicPartition],
                 ) -> list[confluent_kafka.TopicPartition]:
        return [confluent_kafka.TopicPartition(tp.topic, tp.partition,
                                               self.committed.get((tp.topic, tp.partition), -1))
                for tp in partitions]

    def get_watermark_offsets(self, partition: confluent_kafka.TopicPartition,
                              cached: bool) -> tuple[int, int]:
        return 0, partition.offset

    def close(self) -> None:
        self.closed = True
        self.journal.append("close")

    @staticmethod
    def _topic_partitions(partitions: list[Partition]) -> list[confluent_kafka.TopicPartition]:
        return [confluent_kafka.TopicPartition(topic, partition) for topic, partition in partitions]


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class FakeDeadLetterProducer:
    """A confluent_kafka.Producer for the dead-letter topic: produce() queues, flush()
    acknowledges the queue unless told to leave the next flushes unacknowledged (a broker
    that does not answer within the timeout: the messages stay queued)."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.properties: dict[str, object] = {}
        self.queued: list[tuple[DeadLetter, Callable[..., None]]] = []
        self.acknowledged: list[DeadLetter] = []
        self.unacknowledged_flushes = 0

    def __call__(self, properties: dict[str, object]) -> FakeDeadLetterProducer:
        """The factory: the runner's producer_factory."""
        self.properties = properties
        return self

    def produce(self, topic: str, *, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]], on_delivery: Callable[..., None]) -> None:
        self.queued.append((DeadLetter(topic, key, value, dict(headers)), on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        if self.unacknowledged_flushes:
            self.unacknowledged_flushes -= 1
            self.journal.append(f"dead-letter flush: {len(self.queued)} unacknowledged")
            return len(self.queued)
        for message, on_delivery in self.queued:
            on_delivery(None, message)
            self.acknowledged.append(message)
        if self.queued:
            self.journal.append(f"dead-lettered {len(self.queued)}")
        self.queued = []
        return 0


class FakeTopicAdmin:
    """A TopicAdmin over a dict of topics; create() may be refused (not authorized) or
    find the topic created by someone else first."""

    def __init__(self, topics: dict[str, TopicDescription] | None = None) -> None:
        self.topics = dict(topics or {})
        self.created: list[tuple[str, int, int]] = []
        self.refuse_create = False
        self.unreachable = False
        self.created_meanwhile: TopicDescription | None = None
        self.properties: dict[str, object] = {}

    def __call__(self, properties: dict[str, object]) -> FakeTopicAdmin:
        """The factory: the runner's admin_factory."""
        self.properties = properties
        return self

    def describe(self, topic: str) -> TopicDescription | None:
        if self.unreachable:
            raise TopicAdminError("describing: _TRANSPORT: broker down")
        return self.topics.get(topic)

    def create(self, topic: str, partitions: int, max_message_bytes: int) -> None:
        if self.refuse_create:
            raise TopicAuthorizationError("creating: TOPIC_AUTHORIZATION_FAILED")
        if self.created_meanwhile is not None:
            self.topics[topic] = self.created_meanwhile
            raise TopicExistsError("creating: TOPIC_ALREADY_EXISTS")
        self.created.append((topic, partitions, max_message_bytes))
        self.topics[topic] = TopicDescription(partitions, max_message_bytes)


class ScriptedSink:
    """A Sink whose write_batch raises the scripted failures in turn, then stores; during
    writes it runs the next of during_write (e.g. a stop request)."""

    name = "scripted"
    rejection_reasons: tuple[str, ...] = ("scripted-refusal",)

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.failures: deque[Exception] = deque()
        self.during_write: deque[Callable[[], None]] = deque()
        self.stored: list[list[JobEvent]] = []
        self.closed = False

    def prepare(self) -> None:
        pass

    def write_batch(self, events: Sequence[JobEvent]) -> Sequence[Rejection]:
        if self.during_write:
            self.during_write.popleft()()
        if self.failures:
            failure = self.failures.popleft()
            self.journal.append(f"write {len(events)} failed")
            raise failure
        self.stored.append(list(events))
        self.journal.append(f"stored {[e.job_id for e in events]}")
        return []

    def close(self) -> None:
        self.closed = True
        self.journal.append("sink closed")


@dataclass
class RunnerHarness:
    """A ConsumerRunner on scripted clients and sink; run() until the script's end."""

    runner: ConsumerRunner
    consumer: ScriptedConsumer
    dead_letters: FakeDeadLetterProducer
    admin: FakeTopicAdmin
    sink: ScriptedSink
    clock: FakeClock
    journal: list[str]
    registry: CollectorRegistry

    def encoded(self, job_id: str) -> bytes:
        return JobEventCodec().encode(job_event(job_id=job_id))


TOPIC = "jobs"


@pytest.fixture
def runner_harness() -> Callable[..., RunnerHarness]:
    """make(partitions=[(TOPIC, 0)], **settings): a runner with backoff starting at 1 s (on
    the fake clock) and small batches, unless settings say otherwise."""

    def make(partitions: list[Partition] | None = None, **settings: Any) -> RunnerHarness:
        journal: list[str] = []
        clock = FakeClock()
        consumer = ScriptedConsumer(clock, journal, partitions or [(TOPIC, 0)])
        producer = FakeDeadLetterProducer(journal)
        sink = ScriptedSink(journal)
        admin = FakeTopicAdmin()
        config = ConsumerSettings(**{"topic": TOPIC, "batch_max_messages": 10,
                                     "retry_backoff_initial": 1.0, "retry_backoff_max": 4.0,
                                     **settings})
        registry = CollectorRegistry()
        # The scripted clients stand in for confluent_kafka's by duck typing: they have what
        # the runner calls, not the classes' every method.
        runner = ConsumerRunner(config, sink, registry, "test-consumer",
                                consumer_factory=consumer,  # type: ignore[arg-type]
                                producer_factory=producer,  # type: ignore[arg-type]
                                admin_factory=admin, clock=clock)
        consumer.when_idle = runner.request_stop
        return RunnerHarness(runner, consumer, producer, admin, sink, clock, journal, registry)

    return make


@pytest.fixture(autouse=True)
def fresh_repeat_filters() -> None:
    """Each test sees the first message of a kind logged: the repeat filters sit on
    module-level loggers, so what one test logged would hide another's for a minute."""
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            for log_filter in logger.filters:
                if isinstance(log_filter, RepeatFilter):
                    log_filter.forget()
