"""What sarchive-es exposes about Elasticsearch itself; Kafka-side metrics (consumed,
dead-lettered, lag, commits) come from the shared consumer runner."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumers.elastic.bulk_outcomes import REASON_TOO_LARGE, RETRYABLE_STATUSES
from consumers.elastic.documents import DOCUMENT_REASONS

# Bulk requests range from a few milliseconds (small batch, idle node) to the request timeout.
_BULK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0)
# Every label value known in advance, exported at 0 from the start; Elasticsearch's own error
# types come on top of REJECTION_REASONS as it names them.
BULK_OUTCOMES = ("ok", "retry", "split", "fatal")
RETRY_CAUSES = ("connection", "timeout", "transport", "response", "item",
                *(f"http-{status}" for status in sorted(RETRYABLE_STATUSES)))
REJECTION_REASONS = (*DOCUMENT_REASONS, REASON_TOO_LARGE)


class ElasticsearchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.documents_indexed = Counter(
            "sarchive_es_documents_indexed", "documents newly created in Elasticsearch",
            registry=registry)
        self.documents_duplicate = Counter(
            "sarchive_es_documents_duplicate",
            "documents already present with the same _id (redelivery or replay): left as they"
            " were", registry=registry)
        self.bulk_requests = Counter(
            "sarchive_es_bulk_requests",
            "bulk requests sent, by outcome (ok: answered with per-item results; retry, split,"
            " fatal: whole-request failures)", ["outcome"], registry=registry)
        self.bulk_seconds = Histogram(
            "sarchive_es_bulk_seconds", "latency of one bulk request, failures included",
            buckets=_BULK_SECONDS_BUCKETS, registry=registry)
        self.retries = Counter(
            "sarchive_es_retries",
            "bulk retries after a back-off, by cause (connection, timeout, http status,"
            " or item: per-document 429/5xx)", ["cause"], registry=registry)
        self.rejections = Counter(
            "sarchive_es_rejections",
            "documents refused for good and handed to the dead-letter topic, by reason",
            ["reason"], registry=registry)
        self.last_success = Gauge(
            "sarchive_es_last_bulk_success_timestamp_seconds",
            "Unix time of the last bulk request Elasticsearch answered", registry=registry)
        for outcome in BULK_OUTCOMES:
            self.bulk_requests.labels(outcome)
        for cause in RETRY_CAUSES:
            self.retries.labels(cause)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
