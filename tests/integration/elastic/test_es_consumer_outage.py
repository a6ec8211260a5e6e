"""Elasticsearch stopped in the middle of a stream and started again: sarchive-es pauses,
stays in its group, commits nothing it has not indexed, and ends with every document once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.model import JobEvent

ES = {"service": "sarchive-es"}  # the label of the consumers' common metrics


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
        consumer.wait_for_metric("sarchive_consumer_sink_unavailable_total", lambda v: v >= 3,
                                 labels=ES, timeout=60)
        assert consumer.metric("sarchive_consumer_sink_up", ES) == 0
        assert pipeline.committed("sarchive-es-test") <= 200, \
            "offsets of events not yet indexed were committed"
    finally:
        es_node.start()
    pipeline.wait_for_count(400, timeout=120, consumer=consumer)
    assert {version for version, _, _ in pipeline.versions().values()} == {1}
    consumer.wait_for_metric("sarchive_consumer_sink_up", lambda v: v == 1, labels=ES,
                             timeout=10)
    assert consumer.stop() == 0
    assert pipeline.committed("sarchive-es-test") == 400
    pipeline.dead_letters(0, timeout=5)
