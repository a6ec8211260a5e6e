"""The dead-letter topic: poison messages kept with their original bytes and the reason, or,
when the original does not fit the topic, a small pointer record that says where it is."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import confluent_kafka

from consumers.common.settings import ConsumerSettings, dead_letter_producer_properties
from consumers.common.topic_admin import TopicAdmin, TopicAdminError, TopicExistsError
from runtime.kafka import create_client
from schemas.limits import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

HEADER_REASON = "sarchive-dlq-reason"
HEADER_DETAIL = "sarchive-dlq-detail"
HEADER_CONSUMER = "sarchive-dlq-consumer"
HEADER_SOURCE_TOPIC = "sarchive-dlq-source-topic"
HEADER_SOURCE_PARTITION = "sarchive-dlq-source-partition"
HEADER_SOURCE_OFFSET = "sarchive-dlq-source-offset"
HEADER_ORIGINAL_SIZE = "sarchive-dlq-original-size"
DLQ_HEADERS = frozenset({HEADER_REASON, HEADER_DETAIL, HEADER_CONSUMER, HEADER_SOURCE_TOPIC,
                         HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET, HEADER_ORIGINAL_SIZE})

# The reason of a pointer record, dead-lettered in place of an original the dead-letter
# topic (or the dead-letter producer) refused as too large.
REASON_TOO_LARGE = "too-large-for-dlq"
# A pointer record keeps the original key only up to this size: it must always fit.
MAX_POINTER_KEY_BYTES = 1024
_TOO_LARGE = {confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE,
              confluent_kafka.KafkaError.RECORD_LIST_TOO_LARGE}

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


def original_headers(original: HeaderInput) -> Headers:
    """A message's headers as bytes, minus any sarchive-dlq-* ones of an earlier dead letter."""
    headers: Headers = []
    pairs = original.items() if isinstance(original, dict) else original or ()
    for key, value in pairs:
        if key in DLQ_HEADERS:
            continue
        if isinstance(value, str):
            headers.append((key, value.encode("utf-8")))
        else:
            headers.append((key, value if value is not None else b""))
    return headers


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
    headers = original_headers(original)
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


@dataclass(frozen=True)
class DeadLetter:
    """A message on its way to the dead-letter topic, and why."""

    message: confluent_kafka.Message
    reason: str
    detail: str
    consumer: str

    def headers(self) -> Headers:
        topic, partition, offset = source_coordinates(self.message)
        return dead_letter_headers(self.message.headers(), reason=self.reason,
                                   detail=self.detail, consumer=self.consumer, topic=topic,
                                   partition=partition, offset=offset)

    @property
    def size(self) -> int:
        """Bytes of the original's key, value and headers."""
        headers = original_headers(self.message.headers())
        return (len(self.message.key() or b"") + len(self.message.value() or b"")
                + sum(len(k) + len(v) for k, v in headers))


def pointer_record(dead: DeadLetter, refusal: str) -> tuple[bytes | None, bytes, Headers]:
    """(key, value, headers) of a bounded record that stands for an original the dead-letter
    topic refused: where the original is, its size and why it was dead-lettered. Its
    sarchive-dlq-reason is too-large-for-dlq; the original headers are left out (they may be
    what made it large); the value is a JSON object."""
    topic, partition, offset = source_coordinates(dead.message)
    key = dead.message.key()
    if key is not None and len(key) > MAX_POINTER_KEY_BYTES:
        key = None
    size = dead.size
    where = {"topic": topic, "partition": partition, "offset": offset, "size": size,
             "reason": dead.reason, "consumer": dead.consumer}
    # Where first: the detail is cut at MAX_DETAIL_CHARS.
    detail = (f"the original stays at {topic}[{partition}]@{offset} until the topic's retention"
              f" removes it: {size} bytes, refused by the dead-letter topic ({refusal});"
              f" dead-lettered as {dead.reason}: {dead.detail}")
    headers = dead_letter_headers(None, reason=REASON_TOO_LARGE, detail=detail,
                                  consumer=dead.consumer, topic=topic, partition=partition,
                                  offset=offset)
    headers.append((HEADER_ORIGINAL_SIZE, str(size).encode("ascii")))
    return key, json.dumps(where, sort_keys=True).encode("utf-8"), headers


def prepare_dead_letter_topic(admin: TopicAdmin, topic: str, dead_letter_topic: str) -> None:
    """Create the dead-letter topic with the job topic's partitions and a size limit at least
    the job topic's (and the contract's), or check an existing one. A topic the broker would
    auto-create gets the broker's default limit (often 10 MiB). When the topic cannot be
    created or checked, or is smaller, originals that do not fit are dead-lettered as pointer
    records: this only warns, the consumer runs either way."""
    fallback = "originals that do not fit it are dead-lettered as pointer records"
    try:
        job = admin.describe(topic)
        partitions = job.partitions if job else 1
        limit = max(job.max_message_bytes if job else 0, MAX_MESSAGE_BYTES)
        existing = admin.describe(dead_letter_topic)
        if existing is None:
            try:
                admin.create(dead_letter_topic, partitions, limit)
                log.info("created dead-letter topic %s: %d partitions, max.message.bytes %d",
                         dead_letter_topic, partitions, limit)
                return
            except TopicExistsError:
                existing = admin.describe(dead_letter_topic)  # another instance was first
        if existing is None:
            raise TopicAdminError(f"topic {dead_letter_topic!r} neither exists nor was created")
    except TopicAdminError as exc:
        log.warning("cannot check or create dead-letter topic %s (%s): %s", dead_letter_topic,
                    exc, fallback)
        return
    if existing.max_message_bytes < limit:
        log.warning("dead-letter topic %s has max.message.bytes %d, less than the %d of %s:"
                    " %s", dead_letter_topic, existing.max_message_bytes, limit, topic,
                    fallback)


class DeadLetterPublisher:
    """An idempotent acks=all producer to the dead-letter topic, created on first use.

    A message the dead-letter producer or topic refuses as too large (its headers added, an
    original close to the job topic's limit may not fit even an equal limit) is replaced by
    its pointer record: a failure to dead-letter never stalls a partition on a poison message.
    Any other failure raises DeadLetterUnavailableError, and the batch is retried.
    """

    def __init__(self, settings: ConsumerSettings,
                 producer_factory: ProducerFactory = confluent_kafka.Producer,
                 client_properties: Mapping[str, object] | None = None) -> None:
        """client_properties: added to the producer's (logger, error_cb)."""
        self.topic = settings.dead_letter_topic
        self._producer_factory = producer_factory
        self._properties: dict[str, object] = {**dead_letter_producer_properties(settings),
                                               "logger": log, **(client_properties or {})}
        self._producer: confluent_kafka.Producer | None = None
        self._failures: list[str] = []
        self._refused: list[tuple[DeadLetter, str]] = []
        self._pointers = 0
        self._producer_fatal = False

    def _client(self) -> confluent_kafka.Producer:
        if self._producer is None:
            self._producer = create_client(self._producer_factory, self._properties,
                                           "dead-letter producer")
        return self._producer

    def publish(self, message: confluent_kafka.Message, reason: str, detail: str,
                consumer: str) -> None:
        """Queue the message for the dead-letter topic; flush() tells whether it arrived."""
        dead = DeadLetter(message, reason, detail, consumer)
        try:
            self._produce(message.key(), message.value(), dead.headers(),
                          functools.partial(self._delivered, dead))
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if error.code() not in _TOO_LARGE:
                self._unusable(error)
                raise DeadLetterUnavailableError(
                    f"dead-letter topic {self.topic!r}: {error.str()}") from exc
            self._publish_pointer(dead, error.str())

    def _publish_pointer(self, dead: DeadLetter, refusal: str) -> None:
        topic, partition, offset = source_coordinates(dead.message)
        log.warning("%s[%d]@%d (%d bytes) does not fit dead-letter topic %s (%s): sending a"
                    " pointer record instead", topic, partition, offset, dead.size, self.topic,
                    refusal)
        key, value, headers = pointer_record(dead, refusal)
        self._pointers += 1
        try:
            self._produce(key, value, headers, self._delivered_pointer)
        except confluent_kafka.KafkaException as exc:
            self._unusable(exc.args[0])
            raise DeadLetterUnavailableError(
                f"dead-letter topic {self.topic!r}: pointer record: {exc.args[0].str()}"
            ) from exc

    def _produce(self, key: bytes | None, value: bytes | None, headers: Headers,
                 on_delivery: Callable[[confluent_kafka.KafkaError | None,
                                        confluent_kafka.Message], None]) -> None:
        producer = self._client()
        sent: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                producer.produce(self.topic, key=key, value=value, headers=sent,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                producer.poll(0.5)
        producer.poll(0)

    def _unusable(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._producer = None  # as in flush(): the retry gets a new one

    def _delivered(self, dead: DeadLetter, error: confluent_kafka.KafkaError | None,
                   message: confluent_kafka.Message) -> None:
        if error is None:
            return
        if error.code() in _TOO_LARGE:
            self._refused.append((dead, error.str()))
        else:
            self._failures.append(str(error))
            self._producer_fatal = self._producer_fatal or error.fatal()

    def _delivered_pointer(self, error: confluent_kafka.KafkaError | None,
                           message: confluent_kafka.Message) -> None:
        if error is not None:
            self._failures.append(f"pointer record: {error}")

    def flush(self, timeout: float) -> int:
        """Wait for every published message, replacing the ones the topic refused as too
        large by pointer records; raise unless all were acknowledged. Returns how many
        pointer records stand for their originals."""
        if self._producer is None:
            return 0
        remaining = self._producer.flush(timeout)
        refused, self._refused = self._refused, []
        for dead, refusal in refused:
            self._publish_pointer(dead, refusal)
        if refused:
            remaining = self._client().flush(timeout)
        failures, self._failures = self._failures, []
        pointers, self._pointers = self._pointers, 0
        if self._producer_fatal:
            # A fatal producer refuses everything from now on: the retry gets a new one.
            self._producer, self._producer_fatal = None, False
        if remaining or failures:
            raise DeadLetterUnavailableError(
                f"dead-letter topic {self.topic!r}: {remaining} message(s) not acknowledged"
                f" within {timeout}s, {len(failures)} failed"
                + (f" (first: {failures[0]})" if failures else ""))
        return pointers

    def close(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None
