"""Prometheus metrics every consumer service exposes, labelled with the service name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.kafka import ACCESS_FAILURE_CAUSES

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
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
        self.kafka_access_failures = Counter(
            "sarchive_consumer_kafka_access_failures", "Refusals by the broker's security"
            " (nothing is committed meanwhile), by cause: authentication, tls, authorization",
            ["service", "cause"], registry=registry)
        for cause in ACCESS_FAILURE_CAUSES:
            self.kafka_access_failures.labels(service, cause)
        self.sink_up.set(1)

    def dead_letter(self, reason: str) -> None:
        self.dead_lettered.labels(self.service, reason).inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(self.service, topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Stop reporting lag for a partition this instance no longer owns."""
        self._lag.remove(self.service, topic, str(partition))
