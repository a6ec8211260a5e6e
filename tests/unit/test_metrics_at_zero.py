"""Every labelled failure counter of every service exports each reason the code knows at 0
from the start: `increase(...[1h]) > 0` sees the first failure after a restart only if the
series existed before it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.archive.config import ArchiveConfig
from consumers.archive.sink import ArchiveSink
from consumers.common.metrics import ConsumerMetrics
from consumers.elastic.metrics import ElasticsearchMetrics
from consumers.elastic.sink import ElasticsearchSink
from producer.metrics import ProducerMetrics


def samples(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for metric in registry.collect() for s in metric.samples
            if s.name == name}


def test_producer_exports_every_read_failure_delivery_failure_rescan_and_watch_failure_at_0(
        ) -> None:
    registry = CollectorRegistry()
    ProducerMetrics(registry)
    assert samples(registry, "sarchive_producer_jobs_failed_total", "reason") == dict.fromkeys(
        ["incomplete", "vanished", "permission", "malformed", "not-a-job", "symlink", "io",
         "reader-lost"], 0.0)
    assert samples(registry, "sarchive_producer_delivery_failures_total", "kind") == \
        dict.fromkeys(["timed-out", "retriable", "too-large", "rejected", "purged", "fatal"],
                      0.0)
    assert samples(registry, "sarchive_producer_rescans_total", "cause") == dict.fromkeys(
        ["start", "overflow", "watch-limit"], 0.0)
    assert samples(registry, "sarchive_producer_watch_failures_total", "level") == \
        dict.fromkeys(["directory", "job"], 0.0)


def test_archive_consumer_exports_every_dead_letter_reason_and_io_error_at_0(
        tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sink = ArchiveSink(ArchiveConfig(archive=tmp_path), registry)
    ConsumerMetrics(registry, "sarchive-archive", sink.rejection_reasons)
    assert samples(registry, "sarchive_consumer_dead_lettered_total", "reason") == \
        dict.fromkeys(["codec", "not-single-object", "unknown-schema", "corrupt-body",
                       "unsafe-path", "name-too-long", "invalid-submit-time", "path-conflict",
                       "unsafe-archive-entry"], 0.0)
    assert samples(registry, "sarchive_archive_io_errors_total", "error") == dict.fromkeys(
        ["ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "unknown"], 0.0)


def test_elasticsearch_consumer_exports_every_dead_letter_reason_outcome_and_retry_at_0(
        ) -> None:
    registry = CollectorRegistry()
    ElasticsearchMetrics(registry)
    ConsumerMetrics(registry, "sarchive-es", ElasticsearchSink.rejection_reasons)
    known_rejections = ["document", "job-key-too-long", "submit-time-out-of-range",
                        "document-too-large"]
    assert samples(registry, "sarchive_consumer_dead_lettered_total", "reason") == \
        dict.fromkeys(["codec", "not-single-object", "unknown-schema", "corrupt-body",
                       *known_rejections], 0.0)
    assert samples(registry, "sarchive_es_rejections_total", "reason") == dict.fromkeys(
        known_rejections, 0.0)
    assert samples(registry, "sarchive_es_bulk_requests_total", "outcome") == dict.fromkeys(
        ["ok", "retry", "split", "fatal"], 0.0)
    assert samples(registry, "sarchive_es_retries_total", "cause") == dict.fromkeys(
        ["connection", "timeout", "transport", "response", "item", "http-408", "http-429",
         "http-500", "http-502", "http-503", "http-504"], 0.0)
