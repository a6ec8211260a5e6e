"""The Kafka side of delivery: a thin adapter over confluent_kafka.Producer.

Every produced message carries a caller's token; poll() turns librdkafka's delivery callbacks
into DeliveryReports with our own failure kinds, so no confluent_kafka type leaves this module.
librdkafka retries transient errors itself (idempotently, in order); what reaches a report is
final for that attempt, and the caller keeps the event in its outbox to try again.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer

from runtime.kafka import access_failure_cause, access_failure_message, create_client
from runtime.logs import RepeatFilter

log = logging.getLogger(__name__)
kafka_log = logging.getLogger("producer.librdkafka")
# Refusals by the broker's security, which repeat with every attempt: one line per cause a minute.
access_log = logging.getLogger("producer.kafka_access")

TokenT = TypeVar("TokenT")


class FailureKind(enum.StrEnum):
    TIMED_OUT = "timed-out"  # message.timeout.ms passed without an acknowledgement
    RETRIABLE = "retriable"  # transient broker or network error
    TOO_LARGE = "too-large"  # larger than message.max.bytes (producer, broker or topic)
    REJECTED = "rejected"  # permanent broker error: authorization, unknown topic, ...
    PURGED = "purged"  # dropped from librdkafka's queues when a producer was recreated
    FATAL = "fatal"  # the producer instance is unusable and must be recreated


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    kind: FailureKind
    code: str
    detail: str
    access: str | None = None  # the security check that refused: authentication, tls, ...


@dataclass(frozen=True, slots=True)
class DeliveryReport(Generic[TokenT]):
    token: TokenT
    failure: DeliveryFailure | None  # None: acknowledged by all in-sync replicas


class DeliveryError(Exception):
    """produce() did not accept a message."""


class QueueFullError(DeliveryError):
    """librdkafka's queue stayed full: produce again after some poll()ing."""


class ProduceRejectedError(DeliveryError):
    """produce() refused the message itself (too large, producer fatal, ...)."""

    def __init__(self, failure: DeliveryFailure) -> None:
        super().__init__(f"{failure.code}: {failure.detail}")
        self.failure = failure


_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
_TIMED_OUT = {KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT}


def classify(error: KafkaError) -> DeliveryFailure:
    code = error.code()
    if error.fatal():
        kind = FailureKind.FATAL
    elif code in _TOO_LARGE:
        kind = FailureKind.TOO_LARGE
    elif code in _PURGED:
        kind = FailureKind.PURGED
    elif code in _TIMED_OUT:
        kind = FailureKind.TIMED_OUT
    elif error.retriable():
        kind = FailureKind.RETRIABLE
    else:
        kind = FailureKind.REJECTED
    return DeliveryFailure(kind, error.name(), error.str(),
                           access_failure_cause(error.name(), error.str()))


ProducerFactory = Callable[[dict[str, Any]], Any]


kafka_log.addFilter(RepeatFilter())
access_log.addFilter(RepeatFilter())


class KafkaDelivery(Generic[TokenT]):
    """Produces to one topic. The constructor connects nowhere; start() creates the client."""

    def __init__(self, properties: Mapping[str, str], topic: str,
                 producer_factory: ProducerFactory = Producer) -> None:
        self.properties = dict(properties)
        self.topic = topic
        self._factory = producer_factory
        self._producer: Any = None
        self._reports: list[DeliveryReport[TokenT]] = []
        self.fatal_error: DeliveryFailure | None = None
        # Told of every refusal by the broker's security (the publisher counts them).
        self.on_access_failure: Callable[[DeliveryFailure], None] = lambda failure: None

    def start(self) -> None:
        self.fatal_error = None
        self._producer = create_client(self._factory, {
            **self.properties,
            "error_cb": self._on_error,
            "logger": kafka_log,
        }, "producer")

    def produce(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]],
                token: TokenT) -> None:
        """Hand one message to librdkafka; its outcome arrives later from poll()."""
        callback = functools.partial(self._on_delivery, token)
        try:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers,
                                       on_delivery=callback)
            except BufferError:
                # The confluent-kafka idiom: serve delivery reports to make room, once.
                self._producer.poll(0.1)
                self._producer.produce(self.topic, value=value, key=key, headers=headers,
                                       on_delivery=callback)
        except BufferError as exc:
            raise QueueFullError("librdkafka's producer queue is full") from exc
        except KafkaException as exc:
            failure = classify(exc.args[0])
            if failure.kind is FailureKind.FATAL:
                self.fatal_error = failure
            raise ProduceRejectedError(failure) from exc
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> list[DeliveryReport[TokenT]]:
        """Serve librdkafka's callbacks; returns the delivery reports that arrived."""
        self._serving(self._producer.poll, timeout)
        return self._take_reports()

    def flush(self, timeout: float) -> list[DeliveryReport[TokenT]]:
        """Wait up to timeout seconds for the outcome of every message handed over (the
        shutdown's last step); returns the delivery reports that arrived. Messages still
        unanswered then are the caller's to keep."""
        self._serving(self._producer.flush, timeout)
        return self._take_reports()

    def _serving(self, serve: Callable[[float], Any], timeout: float) -> None:
        """poll() or flush(), which may raise a fatal error of the client (seen with an
        idempotent producer refused its producer id by the broker's ACLs) as KafkaException
        instead of passing it to error_cb: it is handled as error_cb handles it (counted and
        named if the broker's security refused, then fatal_error, on which the caller replaces
        the producer); the outbox keeps the events."""
        try:
            serve(timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if classify(error).kind is not FailureKind.FATAL:
                raise
            self._on_error(error)

    def restart(self) -> list[DeliveryReport[TokenT]]:
        """Replace the producer (after a fatal error): every message the old one held is
        reported purged, so the caller produces it again on the new one."""
        old = self._producer
        old.purge(in_queue=True, in_flight=True)
        old.poll(0)
        reports = self._take_reports()
        self.start()
        return reports

    def broker_answers(self, timeout: float) -> bool:
        """Whether a broker answers a metadata request for the topic within timeout: safe
        from another thread (librdkafka's client is thread-safe)."""
        try:
            self._producer.list_topics(self.topic, timeout=timeout)
        except KafkaException:
            return False
        return True

    def _take_reports(self) -> list[DeliveryReport[TokenT]]:
        reports, self._reports = self._reports, []
        return reports

    def _on_delivery(self, token: TokenT, error: KafkaError | None, _message: Any) -> None:
        failure = None if error is None else classify(error)
        if failure is not None and failure.kind is FailureKind.FATAL:
            self.fatal_error = failure
        self._reports.append(DeliveryReport(token, failure))

    def _on_error(self, error: KafkaError) -> None:
        failure = classify(error)
        if failure.access is not None:
            self.on_access_failure(failure)
            access_log.error("%s; events stay in the outbox until acknowledged",
                             access_failure_message(failure.access, failure.code, failure.detail,
                                                    f"write topic {self.topic} idempotently"),
                             extra={"repeat_key": failure.access})
        if failure.kind is FailureKind.FATAL:
            self.fatal_error = failure
            log.error("Kafka producer fatal error %s: %s", failure.code, failure.detail)
            return
        if failure.access is not None:
            return
        # Errors such as "all brokers down" repeat with every reconnect attempt: kafka_log
        # passes each once a minute. The outbox keeps every event meanwhile.
        kafka_log.warning("Kafka: %s: %s (events stay in the outbox until acknowledged)",
                          failure.code, failure.detail)
