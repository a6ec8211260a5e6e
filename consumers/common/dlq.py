"""The dead-letter topic: poison messages kept with their original bytes and the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import confluent_kafka

from consumers.common.settings import ConsumerSettings, dead_letter_producer_properties
from runtime.kafka import create_client

log = logging.getLogger(__name__)

HEADER_REASON = "sarchive-dlq-reason"
HEADER_DETAIL = "sarchive-dlq-detail"
HEADER_CONSUMER = "sarchive-dlq-consumer"
HEADER_SOURCE_TOPIC = "sarchive-dlq-source-topic"
HEADER_SOURCE_PARTITION = "sarchive-dlq-source-partition"
HEADER_SOURCE_OFFSET = "sarchive-dlq-source-offset"
DLQ_HEADERS = frozenset({HEADER_REASON, HEADER_DETAIL, HEADER_CONSUMER, HEADER_SOURCE_TOPIC,
                         HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET})

# Headers are for people and tools, not for a copy of an exception's whole repr.
MAX_DETAIL_CHARS = 2000

# Makes the dead-letter producer from its librdkafka properties: confluent_kafka.Producer, or
# a stand-in in unit tests.
ProducerFactory = Callable[[dict[str, object]], confluent_kafka.Producer]

Headers = list[tuple[str, bytes]]
HeaderInput = Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None


class DeadLetterUnavailableError(Exception):
    """Some dead-lettered message was not acknowledged: the batch must not be committed."""


def source_coordinates(message: confluent_kafka.Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message, which always has all three."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message: no topic, partition or offset")
    return topic, partition, offset


def dead_letter_headers(
    original: HeaderInput,
    *,
    reason: str,
    detail: str,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
) -> Headers:
    """The original headers (minus any earlier sarchive-dlq-* ones), then why and from where.

    A message dead-lettered twice (replayed from the DLQ and refused again) carries only the
    latest reason, so the headers never contradict each other.
    """
    headers: Headers = []
    pairs = original.items() if isinstance(original, dict) else original or ()
    for key, value in pairs:
        if key in DLQ_HEADERS:
            continue
        if isinstance(value, str):
            headers.append((key, value.encode("utf-8")))
        else:
            headers.append((key, value if value is not None else b""))
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    headers += [
        (HEADER_REASON, reason.encode("utf-8")),
        (HEADER_DETAIL, detail.encode("utf-8", "replace")),
        (HEADER_CONSUMER, consumer.encode("utf-8")),
        (HEADER_SOURCE_TOPIC, topic.encode("utf-8")),
        (HEADER_SOURCE_PARTITION, str(partition).encode("ascii")),
        (HEADER_SOURCE_OFFSET, str(offset).encode("ascii")),
    ]
    return headers


class DeadLetterPublisher:
    """An idempotent acks=all producer to the dead-letter topic, created on first use."""

    def __init__(self, settings: ConsumerSettings,
                 producer_factory: ProducerFactory = confluent_kafka.Producer) -> None:
        self.topic = settings.dead_letter_topic
        self._producer_factory = producer_factory
        self._properties = dead_letter_producer_properties(settings)
        self._producer: confluent_kafka.Producer | None = None
        self._failures: list[str] = []

    def _client(self) -> confluent_kafka.Producer:
        if self._producer is None:
            self._producer = create_client(self._producer_factory,
                                           {**self._properties, "logger": log},
                                           "dead-letter producer")
        return self._producer

    def publish(self, message: confluent_kafka.Message, reason: str, detail: str,
                consumer: str) -> None:
        """Queue the message for the dead-letter topic; flush() tells whether it arrived."""
        topic, partition, offset = source_coordinates(message)
        headers: list[tuple[str, str | bytes | None]] = list(dead_letter_headers(
            message.headers(), reason=reason, detail=detail, consumer=consumer,
            topic=topic, partition=partition, offset=offset))
        producer = self._client()
        while True:
            try:
                producer.produce(self.topic, key=message.key(), value=message.value(),
                                 headers=headers, on_delivery=self._delivered)
                break
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                producer.poll(0.5)
        producer.poll(0)

    def _delivered(self, error: confluent_kafka.KafkaError | None,
                   message: confluent_kafka.Message) -> None:
        if error is not None:
            self._failures.append(str(error))

    def flush(self, timeout: float) -> None:
        """Wait for every published message; raise unless all were acknowledged."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterUnavailableError(
                f"dead-letter topic {self.topic!r}: {remaining} message(s) not acknowledged"
                f" within {timeout}s, {len(failures)} failed"
                + (f" (first: {failures[0]})" if failures else ""))

    def close(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None
