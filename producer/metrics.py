"""The producer's Prometheus metrics, on a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from producer.delivery import FailureKind
from producer.errors import (
    REASON_INCOMPLETE,
    REASON_IO,
    REASON_MALFORMED,
    REASON_NOT_A_JOB,
    REASON_PERMISSION,
    REASON_READER_LOST,
    REASON_SYMLINK,
    REASON_VANISHED,
)
from runtime.kafka import ACCESS_FAILURE_CAUSES

# Spool-to-acknowledgement latency spans milliseconds (live) to hours (a broker outage).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

# Every label value the code can give, exported at 0 from the start: `increase(...) > 0` sees
# the first failure after a restart only if the series existed before it.
READ_FAILURE_REASONS = (REASON_INCOMPLETE, REASON_VANISHED, REASON_PERMISSION, REASON_MALFORMED,
                        REASON_NOT_A_JOB, REASON_SYMLINK, REASON_IO, REASON_READER_LOST)
RESCAN_CAUSES = ("start", "overflow", "watch-limit")
WATCH_FAILURE_LEVELS = ("directory", "job")


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "sarchive_producer_"
        self.jobs_detected = Counter(
            prefix + "jobs_detected", "Jobs seen in the spool for the first time (not already"
            " published)", registry=registry)
        self.jobs_published = Counter(
            prefix + "jobs_published", "Job events acknowledged by the broker",
            registry=registry)
        self.jobs_skipped = Counter(
            prefix + "jobs_skipped", "Jobs found by a scan that were already published or"
            " already in the outbox", registry=registry)
        self.jobs_failed = Counter(
            prefix + "jobs_failed", "Jobs that could not be read from the spool, by reason",
            ["reason"], registry=registry)
        self.scripts_truncated = Counter(
            prefix + "scripts_truncated", "Scripts sent cut to --max-script-bytes",
            registry=registry)
        self.redacted_values = Counter(
            prefix + "redacted_values", "Environment values replaced by the redaction marker",
            registry=registry)
        self.records_withheld = Counter(
            prefix + "records_withheld", "Grid Engine job records left out of their events:"
            " masking the hidden environment values in them could not be verified",
            registry=registry)
        self.owners_unknown = Counter(
            prefix + "owners_unknown", "Events sent without an owner established by the"
            " scheduler (administrators only see these jobs)", registry=registry)
        self.reader_restarts = Counter(
            prefix + "reader_restarts", "Job reader processes that died and were replaced"
            " (their jobs are read again)", registry=registry)
        self.outbox_events = Gauge(
            prefix + "outbox_events", "Events in the outbox not yet acknowledged",
            registry=registry)
        self.outbox_bytes = Gauge(
            prefix + "outbox_bytes", "Bytes of the outbox records not yet acknowledged",
            registry=registry)
        self.outbox_disk_bytes = Gauge(
            prefix + "outbox_disk_bytes", "Bytes of the outbox segment files (what"
            " --outbox-max-bytes bounds)", registry=registry)
        self.outbox_full = Gauge(
            prefix + "outbox_full", "1 while the outbox is at its bound and new jobs wait in"
            " the spool", registry=registry)
        self.outbox_full_events = Counter(
            prefix + "outbox_full_events", "Times the outbox reached its bound",
            registry=registry)
        self.outbox_write_errors = Counter(
            prefix + "outbox_write_errors", "Events that could not be appended to the outbox"
            " (the job stays pending)", registry=registry)
        self.ack_latency = Histogram(
            prefix + "ack_latency_seconds", "From the job's script mtime in the spool to the"
            " broker's acknowledgement", buckets=LATENCY_BUCKETS, registry=registry)
        self.delivery_failures = Counter(
            prefix + "delivery_failures", "Delivery attempts that failed (the event stays in"
            " the outbox and is produced again), by kind", ["kind"], registry=registry)
        self.kafka_access_failures = Counter(
            prefix + "kafka_access_failures", "Refusals by the broker's security (the events"
            " stay in the outbox), by cause: authentication, tls, authorization", ["cause"],
            registry=registry)
        for cause in ACCESS_FAILURE_CAUSES:
            self.kafka_access_failures.labels(cause)
        self.producer_restarts = Counter(
            prefix + "kafka_producer_restarts", "Kafka producers recreated after a fatal"
            " error", registry=registry)
        self.inotify_overflows = Counter(
            prefix + "inotify_overflows", "inotify event queue overflows (events lost)",
            registry=registry)
        self.rescans = Counter(
            prefix + "rescans", "Full scans of the spool, by cause", ["cause"],
            registry=registry)
        self.watches = Gauge(prefix + "watches", "inotify watches held", registry=registry)
        self.watch_failures = Counter(
            prefix + "watch_failures", "inotify watches that could not be added (for example"
            " the max_user_watches limit), by level", ["level"], registry=registry)
        self.pending_jobs = Gauge(
            prefix + "pending_jobs", "Jobs detected whose files are not complete yet, or that"
            " wait for room in the outbox", registry=registry)
        self.outbox_oldest_age = Gauge(
            prefix + "outbox_oldest_age_seconds", "Seconds since the submission of the job whose"
            " event is first in the outbox, unacknowledged (0: outbox empty)",
            registry=registry)
        self.broker_up = Gauge(
            prefix + "broker_up", "1 while a broker answers (a delivery acknowledged or the"
            " periodic metadata check answered), 0 once none does", registry=registry)
        self.spool_present = Gauge(
            prefix + "spool_present", "1 while the spool directory exists and is watched, 0"
            " while the producer waits for it", registry=registry)
        for reason in READ_FAILURE_REASONS:
            self.jobs_failed.labels(reason)
        for kind in FailureKind:
            self.delivery_failures.labels(kind.value)
        for cause in RESCAN_CAUSES:
            self.rescans.labels(cause)
        for level in WATCH_FAILURE_LEVELS:
            self.watch_failures.labels(level)
