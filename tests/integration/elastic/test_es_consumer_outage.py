"""Elasticsearch stopped in the middle of a stream and started again: sarchive-es pauses,
stays in its group, commits nothing it has not indexed, and ends with every document once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.model import JobEvent


def test_elasticsearch_stopped_mid_stream_then_started_again_every_document_arrives_once(
        pipeline: Any, es_node: Any, job_events: Callable[..., list[JobEvent]]) -> None:
    events = job_events(400)
    # Few quick retries inside a batch, so the pause-and-resume of the runner is what rides
    # out the outage.
    consumer = pipeline.start_consumer("--es-max-retries", "1", "--es-timeout", "5")
    pipeline.produce(events[:200])
    pipeline.wait_for_count(200, timeout=60, consumer=consumer)
    try:
        es_node.stop()
        pipeline.produce(events[200:])
        consumer.wait_metric("sarchive_consumer_sink_unavailable_total", 3, timeout=60,
                             service="sarchive-es")
        assert consumer.metric("sarchive_consumer_sink_up", service="sarchive-es") == 0
        assert pipeline.committed("sarchive-es-test") <= 200, \
            "offsets of events not yet indexed were committed"
    finally:
        es_node.start()
    pipeline.wait_for_count(400, timeout=120, consumer=consumer)
    assert {version for version, _, _ in pipeline.versions().values()} == {1}
    consumer.wait_metric("sarchive_consumer_sink_up", 1, timeout=10, service="sarchive-es")
    assert consumer.terminate() == 0
    assert pipeline.committed("sarchive-es-test") == 400
    pipeline.dead_letters(0, timeout=5)
