"""sarchive-es when things go wrong, for real: documents Elasticsearch refuses, messages that
are no job event, and the consumer killed in the middle of a batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from elasticsearch import Elasticsearch

from schemas.codec import JobEventCodec
from schemas.model import JobEvent
from schemas.wire import message_key


def test_document_elasticsearch_refuses_goes_to_the_dead_letter_topic_with_the_reason(
    pipeline: Any, es: Elasticsearch, job_events: Callable[..., list[JobEvent]]
) -> None:
    events = job_events(300)[280:]  # 8 submitted on the last day of May, 12 in June
    events[0] = dataclasses.replace(events[0], user="42")  # a May job a number fits
    refused = [e for e in events[1:] if e.submit_datetime.month == 5]
    assert refused, "the test needs May events with a user name"
    consumer = pipeline.start_consumer()
    consumer.wait_until(lambda: bool(es.indices.exists_index_template(name=pipeline.prefix)),
                        30, "sarchive-es has installed its index template")
    # An operator created May's index by hand, overriding the template's type of `user`:
    # Elasticsearch refuses every May document whose user is a name, and no other.
    es.indices.create(index=f"{pipeline.prefix}-2024.05",
                      mappings={"properties": {"user": {"type": "long"}}})
    pipeline.produce(events)
    pipeline.wait_for_count(len(events) - len(refused), timeout=60, consumer=consumer)

    letters = pipeline.dead_letters(len(refused))
    codec = JobEventCodec()
    assert {codec.decode(letter.value).job_key for letter in letters} == {
        e.job_key for e in refused
    }
    for letter in letters:
        assert letter.key == message_key(codec.decode(letter.value).job_key)
        assert letter.headers["sarchive-dlq-reason"] == "document_parsing_exception"
        assert (
            "failed to parse field [user] of type [long]" in letter.headers["sarchive-dlq-detail"]
        )
        assert letter.headers["sarchive-dlq-consumer"] == "sarchive-es"
        assert letter.headers["sarchive-dlq-source-topic"] == pipeline.topic
    consumer.wait_for_metric("sarchive_es_rejections_total", lambda v: v >= len(refused),
                             labels={"reason": "document_parsing_exception"}, timeout=10)
    assert consumer.stop() == 0
    # Every message is indexed or dead-lettered, so every offset is committed.
    assert pipeline.committed("sarchive-es-test") == len(events)


def test_poison_message_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    pipeline: Any, job_events: Callable[..., list[JobEvent]]
) -> None:
    events = job_events(10)
    pipeline.produce(events[:5])
    pipeline.produce_raw(b"not-a-job", b'{"json": "is not Avro"}')
    pipeline.produce(events[5:])
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(10, timeout=60, consumer=consumer)

    (letter,) = pipeline.dead_letters(1)
    assert (letter.key, letter.value) == (b"not-a-job", b'{"json": "is not Avro"}')
    assert letter.headers["sarchive-dlq-reason"] == "not-single-object"
    assert consumer.stop() == 0
    assert pipeline.committed("sarchive-es-test") == 11


def test_consumer_killed_mid_batch_and_restarted_indexes_everything_exactly_once(
    pipeline: Any, job_events: Callable[..., list[JobEvent]]
) -> None:
    total = 1500
    pipeline.produce(job_events(total))
    # One batch for (nearly) the whole topic, five documents per bulk request: the batch
    # takes seconds, and the kill lands in it rather than between two commits.
    # The killed member holds its partitions until its session times out: the broker's
    # minimum (6 s) rather than the default 45 s keeps the test short.
    flags = ("--batch-max-messages", str(total), "--bulk-max-docs", "5",
             "--kafka-property", "session.timeout.ms=6000")
    first = pipeline.start_consumer(*flags)
    first.wait_until(lambda: pipeline.count() >= 100, 60, "100 documents are indexed")
    first.kill()  # SIGKILL: no commit, no flush, no goodbye
    at_kill = pipeline.count()
    assert at_kill < total, "the consumer finished before it could be killed mid-stream"
    committed = pipeline.committed("sarchive-es-test")
    assert committed < at_kill, "some indexed documents must be uncommitted at the kill"

    second = pipeline.start_consumer(*flags)
    pipeline.wait_for_count(total, timeout=180, consumer=second)
    # What was indexed but not committed came again and was recognised, not rewritten.
    duplicates = second.metric("sarchive_es_documents_duplicate_total")
    assert duplicates is not None and duplicates >= at_kill - committed
    assert {version for version, _, _ in pipeline.versions().values()} == {1}
    assert second.stop() == 0
    assert pipeline.committed("sarchive-es-test") == total
