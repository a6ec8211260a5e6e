"""Prometheus metrics every consumer service exposes, labelled with the service name."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.kafka import ACCESS_FAILURE_CAUSES, CLIENT_ERROR_KINDS
from schemas.errors import (
    CodecError,
    CorruptEventError,
    NotSingleObjectEncodedError,
    UnknownSchemaError,
)

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Submission to durable in the sink: seconds (live) to days (an outage, a replayed topic).
END_TO_END_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                      4 * 3600.0, 24 * 3600.0, 7 * 24 * 3600.0)
# Why the runner itself dead-letters a message; the sink adds its own rejection reasons.
DECODE_REASONS = tuple(error.reason for error in (
    CodecError, NotSingleObjectEncodedError, UnknownSchemaError, CorruptEventError))


class ConsumerMetrics:
    """rejection_reasons: the sink's; with DECODE_REASONS they are the dead-letter reasons
    exported at 0 from the start."""

    def __init__(self, registry: CollectorRegistry, service: str,
                 rejection_reasons: Iterable[str] = ()) -> None:
        self.service = service
        self.consumed = Counter(
            "sarchive_consumer_messages_consumed", "Messages taken from the job topic",
            ["service"], registry=registry).labels(service)
        self.dead_lettered = Counter(
            "sarchive_consumer_dead_lettered", "Messages sent to the dead-letter topic",
            ["service", "reason"], registry=registry)
        self.batch_size = Histogram(
            "sarchive_consumer_batch_size", "Messages per batch", ["service"],
            buckets=BATCH_SIZE_BUCKETS, registry=registry).labels(service)
        self.batch_write_seconds = Histogram(
            "sarchive_consumer_batch_write_seconds",
            "Time for the sink to make one batch durable (successful attempts)", ["service"],
            buckets=LATENCY_BUCKETS, registry=registry).labels(service)
        self.sink_unavailable = Counter(
            "sarchive_consumer_sink_unavailable",
            "Batch attempts that failed because the sink or the dead-letter topic was"
            " unavailable (each is retried)", ["service"], registry=registry).labels(service)
        self.sink_up = Gauge(
            "sarchive_consumer_sink_up",
            "1 while the last write attempt succeeded, 0 while retrying an unavailable sink",
            ["service"], registry=registry).labels(service)
        self.commits = Counter(
            "sarchive_consumer_commits", "Successful synchronous offset commits", ["service"],
            registry=registry).labels(service)
        self.commit_failures = Counter(
            "sarchive_consumer_commit_failures", "Offset commits the broker refused",
            ["service"], registry=registry).labels(service)
        self.last_commit = Gauge(
            "sarchive_consumer_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit", ["service"],
            registry=registry).labels(service)
        self._lag = Gauge(
            "sarchive_consumer_lag", "Messages behind the partition's high watermark",
            ["service", "topic", "partition"], registry=registry)
        self._lag_seconds = Gauge(
            "sarchive_consumer_lag_seconds",
            "Seconds the partition is behind: 0 when caught up, else since the later of the"
            " newest durable message's Kafka timestamp and the moment it fell behind",
            ["service", "topic", "partition"], registry=registry)
        self.end_to_end = Histogram(
            "sarchive_consumer_end_to_end_seconds",
            "From the job's submission (its submit time) to its event being durable in the"
            " sink", ["service"], buckets=END_TO_END_BUCKETS, registry=registry).labels(service)
        self.kafka_access_failures = Counter(
            "sarchive_consumer_kafka_access_failures", "Refusals by the broker's security"
            " (nothing is committed meanwhile), by cause: authentication, tls, authorization",
            ["service", "cause"], registry=registry)
        for cause in ACCESS_FAILURE_CAUSES:
            self.kafka_access_failures.labels(service, cause)
        self.sink_up.set(1)
        for reason in (*DECODE_REASONS, *rejection_reasons):
            self.dead_lettered.labels(service, reason)
        self._client_errors = Counter(
            "sarchive_consumer_kafka_client_errors", "Errors the Kafka clients reported (broker"
            " unreachable, authentication, ...), by kind; the log shows each once a minute",
            ["service", "kind"], registry=registry)
        for kind in CLIENT_ERROR_KINDS:
            self._client_errors.labels(service, kind)
        self.dead_letter_pointers = Counter(
            "sarchive_consumer_dead_letter_pointers", "Dead letters sent as pointer records:"
            " the original did not fit the dead-letter topic and stays in the job topic",
            ["service"], registry=registry).labels(service)

    def dead_letter(self, reason: str) -> None:
        self.dead_lettered.labels(self.service, reason).inc()

    def client_error(self, kind: str) -> None:
        self._client_errors.labels(self.service, kind).inc()

    def set_lag(self, topic: str, partition: int, lag: int, seconds: float) -> None:
        self._lag.labels(self.service, topic, str(partition)).set(lag)
        self._lag_seconds.labels(self.service, topic, str(partition)).set(seconds)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Stop reporting lag for a partition this instance no longer owns."""
        for gauge in (self._lag, self._lag_seconds):
            gauge.remove(self.service, topic, str(partition))  # no-op for a series never set
