"""The consume -> decode -> write -> dead-letter -> commit loop every consumer service runs.

One batch at a time: messages are decoded, the decodable events handed to the sink, which
returns only once they are durable; whatever could not be decoded or was refused by the sink
goes to the dead-letter topic and must be acknowledged there; only then are the batch's
offsets committed, synchronously. A crash anywhere before the commit means redelivery, never
loss, which is why every sink is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import confluent_kafka
from prometheus_client import CollectorRegistry

from consumers.common.dlq import (
    DeadLetterPublisher,
    DeadLetterUnavailableError,
    ProducerFactory,
    prepare_dead_letter_topic,
    source_coordinates,
)
from consumers.common.metrics import ConsumerMetrics
from consumers.common.settings import ConsumerSettings, admin_properties, consumer_properties
from consumers.common.sink import Sink, SinkFatalError, SinkUnavailableError
from consumers.common.topic_admin import KafkaTopicAdmin, TopicAdmin
from runtime.backoff import backoff_delays
from runtime.config import ConfigError
from runtime.exits import EXIT_FAILURE, EXIT_OK
from runtime.kafka import (
    access_failure_cause,
    access_failure_message,
    client_error_kind,
    create_client,
)
from runtime.logs import RepeatFilter
from schemas.codec import JobEventCodec
from schemas.errors import CodecError
from schemas.model import JobEvent

log = logging.getLogger(__name__)
# What the Kafka clients log, and their errors: a broker that is down makes librdkafka log
# every reconnect attempt (about 19 lines a second per consumer); each passes once a minute.
kafka_log = logging.getLogger("consumers.librdkafka")
kafka_log.addFilter(RepeatFilter())

# While backing off, the consumer keeps polling in slices this long, so that it stays in
# its group (max.poll.interval.ms) and notices a stop request promptly.
POLL_SLICE = 1.0
LAG_REPORT_INTERVAL = 5.0

Partition = tuple[str, int]


@dataclass(frozen=True)
class BatchEntry:
    """One message of the batch in flight: its decoded event, or why it has none."""

    message: confluent_kafka.Message
    event: JobEvent | None
    reason: str = ""
    detail: str = ""

    @property
    def partition(self) -> Partition:
        topic, partition, _ = source_coordinates(self.message)
        return (topic, partition)


def commit_positions(coordinates: Iterable[tuple[str, int, int]]) -> dict[Partition, int]:
    """The offset to commit per partition for (topic, partition, offset) messages handled:
    one past the highest, i.e. the next message to read."""
    positions: dict[Partition, int] = {}
    for topic, partition, offset in coordinates:
        key = (topic, partition)
        positions[key] = max(positions.get(key, -1), offset + 1)
    return positions


Consume = Callable[[int, float], list[confluent_kafka.Message]]
# Makes the Kafka consumer from its librdkafka properties: confluent_kafka.Consumer, or a
# scripted stand-in in unit tests.
ConsumerFactory = Callable[[dict[str, object]], confluent_kafka.Consumer]
# Makes the topic admin from librdkafka properties: KafkaTopicAdmin, or a fake in unit tests.
AdminFactory = Callable[[dict[str, object]], TopicAdmin]


def take_batch(consume: Consume, max_messages: int, wait: float) -> list[confluent_kafka.Message]:
    """Up to max_messages of what has arrived, through consume(num_messages, timeout).

    Waits up to `wait` seconds for the first message only, then adds what the client has
    already fetched without waiting: a message arriving alone is handled at once rather
    than after a batch timeout, and a backlog still comes in full batches.
    """
    messages = consume(1, wait)
    if messages and max_messages > 1:
        messages += consume(max_messages - 1, 0)
    return messages


class KafkaFatalError(Exception):
    """librdkafka reported a fatal error: the consumer instance cannot continue."""


def is_fatal(error: confluent_kafka.KafkaError) -> bool:
    """Whether the consumer instance is unusable. librdkafka reports a fatal error (such as a
    static member fenced by another with its group.instance.id) with the code _FATAL, and
    confluent-kafka does not set the fatal flag on that one."""
    return error.fatal() or error.code() == confluent_kafka.KafkaError._FATAL


class ConsumerRunner:
    """clock: seconds for back-off deadlines and timings (time.monotonic; a seam for tests,
    whose scripted consumer moves a fake clock on as it waits)."""

    def __init__(self, settings: ConsumerSettings, sink: Sink, registry: CollectorRegistry,
                 service: str, codec: JobEventCodec | None = None, *,
                 consumer_factory: ConsumerFactory = confluent_kafka.Consumer,
                 producer_factory: ProducerFactory = confluent_kafka.Producer,
                 admin_factory: AdminFactory = KafkaTopicAdmin,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.sink = sink
        self.service = service
        self.codec = codec if codec is not None else JobEventCodec()
        self.metrics = ConsumerMetrics(registry, service, sink.rejection_reasons)
        # Computed here so that a bad --kafka-property is a ConfigError before anything runs.
        self._properties = consumer_properties(settings)
        self._consumer_factory = consumer_factory
        client_callbacks = {"logger": kafka_log, "error_cb": self._on_client_error}
        self._dead_letters = DeadLetterPublisher(settings, producer_factory, client_callbacks)
        self._admin_factory = admin_factory
        self._admin_properties = {**admin_properties(settings), **client_callbacks}
        self._fatal_error: confluent_kafka.KafkaError | None = None
        self._clock = clock
        self._stop = threading.Event()
        self._consumer: confluent_kafka.Consumer | None = None
        self._batch: list[BatchEntry] = []
        self._uncommitted: dict[Partition, int] = {}
        self._paused = False
        self._last_lag_report = 0.0
        # Per partition: the Kafka timestamp (ms) of the newest message made durable, and
        # the wall time since which the lag report has found it behind.
        self._newest_durable_ms: dict[Partition, int] = {}
        self._behind_since: dict[Partition, float] = {}
        self._access_refused: str | None = None  # error code of the refusal logged, until healed

    def request_stop(self) -> None:
        """Finish the batch in hand, commit it and return from run(); safe from signal
        handlers and other threads."""
        self._stop.set()

    def run(self) -> int:
        """Consume until stopped; the exit code for the process."""
        try:
            if not self._prepare_sink():
                self.sink.close()
                return EXIT_OK
        except SinkFatalError as exc:
            log.error("%s sink cannot start: %s", self.sink.name, exc)
            self.sink.close()
            return EXIT_FAILURE
        try:
            admin = self._admin_factory(self._admin_properties)
            prepare_dead_letter_topic(admin, self.settings.topic,
                                      self.settings.dead_letter_topic)
            consumer = create_client(self._consumer_factory,
                                     {**self._properties, "logger": kafka_log,
                                      "error_cb": self._on_consumer_error},
                                     "consumer")
        except ConfigError:
            self.sink.close()
            raise
        self._consumer = consumer
        try:
            consumer.subscribe([self.settings.topic], on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)
            log.info("consuming %s as group %s, %s", self.settings.topic, self.settings.group,
                     f"static member {self.settings.instance_id}" if self.settings.instance_id
                     else "dynamic member")
            while not self._stop.is_set():
                messages = take_batch(consumer.consume, self.settings.batch_max_messages,
                                      self.settings.batch_timeout)
                if self._fatal_error is not None:
                    raise KafkaFatalError(self._fatal_error.str())
                if messages:
                    self._handle_batch(messages)
                elif self._uncommitted:
                    # A commit refused during a rebalance must not wait for the next message.
                    self._commit({})
                self._report_lag()
            log.info("stop requested: closing the consumer")
            return EXIT_OK
        except SinkFatalError as exc:
            log.error("%s sink failed for good, nothing of the batch committed: %s",
                      self.sink.name, exc)
            return EXIT_FAILURE
        except (KafkaFatalError, confluent_kafka.KafkaException) as exc:
            log.error("Kafka consumer failed: %s", exc)
            return EXIT_FAILURE
        finally:
            self._shutdown(consumer)

    def _shutdown(self, consumer: confluent_kafka.Consumer) -> None:
        try:
            # A dynamic member leaves the group so the partitions move on at once; a static
            # one stays, to get them back at once when it returns.
            consumer.close()
        except (confluent_kafka.KafkaException, RuntimeError) as exc:
            log.warning("closing the Kafka consumer: %s", exc)
        self._consumer = None
        self._dead_letters.close(self.settings.commit_timeout)
        self.sink.close()

    def _prepare_sink(self) -> bool:
        """sink.prepare(), retried with backoff while unavailable; False if stopped first."""
        delays = backoff_delays(self.settings.retry_backoff_initial,
                                self.settings.retry_backoff_max)
        while True:
            try:
                self.sink.prepare()
                return True
            except SinkUnavailableError as exc:
                delay = next(delays)
                self.metrics.sink_unavailable.inc()
                self.metrics.sink_up.set(0)
                log.warning("%s sink unavailable at start (%s); retrying in %.1fs",
                            self.sink.name, exc, delay)
                if self._stop.wait(delay):
                    return False

    # -- one batch ---------------------------------------------------------------------

    def _handle_batch(self, messages: Sequence[confluent_kafka.Message]) -> None:
        self._batch = self._entries(messages)
        delays = backoff_delays(self.settings.retry_backoff_initial,
                                self.settings.retry_backoff_max)
        while self._batch:
            try:
                self._deliver(self._batch)
                break
            except (SinkUnavailableError, DeadLetterUnavailableError) as exc:
                delay = next(delays)
                self.metrics.sink_unavailable.inc()
                self.metrics.sink_up.set(0)
                log.error("batch of %d not stored, nothing committed, retrying in %.1fs: %s",
                          len(self._batch), delay, exc)
                if not self._wait_paused(delay):
                    log.warning("stopping with %d messages not stored; they will be"
                                " delivered again", len(self._batch))
                    self._batch = []
                    return
        if self._batch:
            self._note_durable(self._batch)
            self._commit(commit_positions(source_coordinates(e.message) for e in self._batch))
        self._batch = []
        if self._paused:
            self._resume()

    def _entries(self, messages: Sequence[confluent_kafka.Message]) -> list[BatchEntry]:
        entries: list[BatchEntry] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if is_fatal(error):
                    raise KafkaFatalError(str(error))
                self._on_client_error(error)
                continue
            entries.append(self._decode(message))
        if entries:
            self._access_refused = None
        self.metrics.consumed.inc(len(entries))
        if entries:
            self.metrics.batch_size.observe(len(entries))
        return entries

    def _access_failure(self, code: str, detail: str) -> bool:
        """Count a refusal by the broker's security and log it once until messages flow
        again (librdkafka repeats it with every attempt); False for any other error."""
        cause = access_failure_cause(code, detail)
        if cause is None:
            return False
        self.metrics.kafka_access_failures.labels(self.service, cause).inc()
        refused = (f"read group {self.settings.group}" if code == "GROUP_AUTHORIZATION_FAILED"
                   else f"read topic {self.settings.topic}")
        if code != self._access_refused:
            self._access_refused = code
            log.error("%s; nothing is committed until it is fixed",
                      access_failure_message(cause, code, detail, refused))
        return True

    def _decode(self, message: confluent_kafka.Message) -> BatchEntry:
        try:
            return BatchEntry(message, self.codec.decode(message.value() or b""))
        except CodecError as exc:
            return BatchEntry(message, None, exc.reason, str(exc))

    def _deliver(self, entries: Sequence[BatchEntry]) -> None:
        """Make every entry durable: events in the sink, the rest in the dead-letter topic."""
        stored = [e for e in entries if e.event is not None]
        dead = [(e.message, e.reason, e.detail) for e in entries if e.event is None]
        if stored:
            started = self._clock()
            rejections = self.sink.write_batch([e.event for e in stored if e.event])
            self.metrics.batch_write_seconds.observe(self._clock() - started)
            dead += [(stored[r.index].message, r.reason, r.detail) for r in rejections]
            self._observe_end_to_end(stored, {r.index for r in rejections})
        for message, reason, detail in dead:
            log.warning("dead-lettering %s[%d]@%d: %s: %s", message.topic(),
                        message.partition(), message.offset(), reason, detail)
            self._dead_letters.publish(message, reason, detail, self.service)
        if dead:
            pointers = self._dead_letters.flush(self.settings.commit_timeout)
            for _, reason, _ in dead:
                self.metrics.dead_letter(reason)
            self.metrics.dead_letter_pointers.inc(pointers)
        self.metrics.sink_up.set(1)

    def _observe_end_to_end(self, stored: Sequence[BatchEntry], rejected: set[int]) -> None:
        now = time.time()
        for index, entry in enumerate(stored):
            if entry.event is not None and index not in rejected:
                self.metrics.end_to_end.observe(max(0.0, now - entry.event.submit_time / 1000))

    def _note_durable(self, entries: Sequence[BatchEntry]) -> None:
        """Remember the newest timestamp made durable per partition: the lag in seconds."""
        newest = self._newest_durable_ms
        for entry in entries:
            kind, timestamp_ms = entry.message.timestamp()
            if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE:
                key = entry.partition
                newest[key] = max(newest.get(key, timestamp_ms), timestamp_ms)

    def _wait_paused(self, delay: float) -> bool:
        """Back off for delay seconds with every assigned partition paused, still polling so
        the group membership and rebalances go on; False when a stop was requested."""
        consumer = self._require_consumer()
        deadline = self._clock() + delay
        while not self._stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return True
            # Re-pausing each time also covers partitions assigned during the wait.
            consumer.pause(consumer.assignment())
            self._paused = True
            late = consumer.consume(self.settings.batch_max_messages,
                                    min(remaining, POLL_SLICE))
            # Messages fetched before the pause took effect join the batch being retried.
            self._batch += self._entries(late)
        return False

    def _resume(self) -> None:
        consumer = self._require_consumer()
        consumer.resume(consumer.assignment())
        self._paused = False
        self.metrics.sink_up.set(1)

    def _commit(self, positions: dict[Partition, int]) -> None:
        self._uncommitted.update(positions)
        consumer = self._require_consumer()
        offsets = [confluent_kafka.TopicPartition(t, p, o)
                   for (t, p), o in sorted(self._uncommitted.items())]
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            # Typically a rebalance in progress: the events are durable, so the worst case
            # is a redelivery the sink recognises. Retried with the next commit or on revoke.
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed, will retry: %s", exc)
            return
        failed = {(r.topic, r.partition) for r in results or () if r.error is not None}
        if failed:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed for %s, will retry", sorted(failed))
        self._uncommitted = {k: v for k, v in self._uncommitted.items() if k in failed}
        if not failed:
            self.metrics.commits.inc()
            self.metrics.last_commit.set(time.time())

    def _on_consumer_error(self, error: confluent_kafka.KafkaError) -> None:
        """The consumer's error_cb: a fatal error may come here rather than from consume();
        the loop then stops the service."""
        if is_fatal(error):
            self._fatal_error = error
        self._on_client_error(error)

    def _on_client_error(self, error: confluent_kafka.KafkaError) -> None:
        """error_cb of every client, and consume()'s error events: counted, logged through
        the repeat filter. librdkafka recovers from these itself (fatal ones aside)."""
        self.metrics.client_error(client_error_kind(error))
        if self._access_failure(error.name(), error.str()):
            return  # named in one line of its own
        kafka_log.warning("Kafka client error: %s", error)

    # -- rebalance callbacks (run inside consume()) ------------------------------------

    def _on_assign(self, consumer: confluent_kafka.Consumer,
                   partitions: list[confluent_kafka.TopicPartition]) -> None:
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: confluent_kafka.Consumer,
                   partitions: list[confluent_kafka.TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        durable = {k: v for k, v in self._uncommitted.items() if k in revoked}
        if durable:
            try:
                consumer.commit(offsets=[confluent_kafka.TopicPartition(t, p, o)
                                         for (t, p), o in sorted(durable.items())],
                                asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                log.warning("commit on revoke failed (the new owner re-reads): %s", exc)
        self._release(revoked, "revoked")

    def _on_lost(self, consumer: confluent_kafka.Consumer,
                 partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._release({(tp.topic, tp.partition) for tp in partitions}, "lost")

    def _release(self, partitions: set[Partition], how: str) -> None:
        dropped = [e for e in self._batch if e.partition in partitions]
        self._batch = [e for e in self._batch if e.partition not in partitions]
        self._uncommitted = {k: v for k, v in self._uncommitted.items() if k not in partitions}
        for topic, partition in partitions:
            self.metrics.forget_partition(topic, partition)
            self._newest_durable_ms.pop((topic, partition), None)
            self._behind_since.pop((topic, partition), None)
        log.info("%s %s%s", how, sorted(partitions),
                 f"; {len(dropped)} unstored messages left for the new owner" if dropped else "")

    # -- lag -------------------------------------------------------------------------------

    def _report_lag(self) -> None:
        """Messages behind the high watermark per partition, and seconds behind: 0 when caught
        up, else the time since the later of the newest durable message's production and the
        first report that found the partition behind (so a message arriving after a quiet
        hour is not an hour late, while a stuck consumer's lag grows with the wall clock)."""
        now = self._clock()
        if now - self._last_lag_report < LAG_REPORT_INTERVAL:
            return
        self._last_lag_report = now
        consumer = self._require_consumer()
        assignment = consumer.assignment()
        if not assignment:
            return
        for position in consumer.position(assignment):
            if position.offset < 0:
                continue  # nothing consumed yet: no position to measure from
            # cached=True reads the watermark from the last fetch response: no request.
            _, high = consumer.get_watermark_offsets(position, cached=True)
            if high < 0:
                continue
            lag = max(high - position.offset, 0)
            self.metrics.set_lag(position.topic, position.partition, lag,
                                 self._seconds_behind((position.topic, position.partition), lag))

    def _seconds_behind(self, partition: Partition, lag: int) -> float:
        if lag == 0:
            self._behind_since.pop(partition, None)
            return 0.0
        wall = time.time()
        since = self._behind_since.setdefault(partition, wall)
        newest_ms = self._newest_durable_ms.get(partition)
        if newest_ms is not None:
            since = max(since, newest_ms / 1000)
        return max(0.0, wall - since)

    def _require_consumer(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            raise RuntimeError("the Kafka consumer exists only inside run()")
        return self._consumer


def _names(partitions: Sequence[confluent_kafka.TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
