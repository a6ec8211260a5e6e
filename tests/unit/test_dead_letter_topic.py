"""The dead-letter topic prepared at start (created with the job topic's limit, or checked),
and pointer records for originals it refuses as too large: a poison message never stalls a
partition. The admin client and the producer are stand-ins at their factory seams."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.common.dlq import (
    REASON_TOO_LARGE,
    DeadLetter,
    DeadLetterPublisher,
    DeadLetterUnavailableError,
    pointer_record,
    prepare_dead_letter_topic,
)
from consumers.common.settings import ConsumerSettings
from consumers.common.topic_admin import TopicDescription
from schemas.limits import MAX_MESSAGE_BYTES
from tests.unit.conftest import FakeMessage, FakeTopicAdmin

TEN_MIB = 10 * 1024 * 1024


def test_a_missing_dead_letter_topic_is_created_with_the_job_topics_partitions_and_limit() -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(6, MAX_MESSAGE_BYTES + 1)})
    prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == [("jobs.dlq", 6, MAX_MESSAGE_BYTES + 1)]


def test_the_dead_letter_topic_gets_at_least_the_contracts_limit() -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(3, TEN_MIB)})
    prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == [("jobs.dlq", 3, MAX_MESSAGE_BYTES)]


def test_a_job_topic_not_created_yet_gives_one_partition_and_the_contracts_limit() -> None:
    admin = FakeTopicAdmin()
    prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == [("jobs.dlq", 1, MAX_MESSAGE_BYTES)]


def test_an_existing_smaller_dead_letter_topic_is_kept_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(3, MAX_MESSAGE_BYTES),
                            "jobs.dlq": TopicDescription(1, TEN_MIB)})
    with caplog.at_level(logging.WARNING):
        prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == []
    assert "max.message.bytes 10485760" in caplog.text
    assert "pointer records" in caplog.text


def test_an_existing_large_enough_dead_letter_topic_is_used_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(3, MAX_MESSAGE_BYTES),
                            "jobs.dlq": TopicDescription(1, MAX_MESSAGE_BYTES)})
    with caplog.at_level(logging.WARNING):
        prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == []
    assert caplog.text == ""


@pytest.mark.parametrize("failure", ["refuse_create", "unreachable"])
def test_a_topic_that_cannot_be_created_or_checked_only_warns(
        failure: str, caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(3, MAX_MESSAGE_BYTES)})
    setattr(admin, failure, True)
    with caplog.at_level(logging.WARNING):
        prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert admin.created == []
    assert "cannot check or create dead-letter topic jobs.dlq" in caplog.text


def test_a_topic_another_instance_created_first_is_checked(
        caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeTopicAdmin({"jobs": TopicDescription(3, MAX_MESSAGE_BYTES)})
    admin.created_meanwhile = TopicDescription(3, TEN_MIB)
    with caplog.at_level(logging.WARNING):
        prepare_dead_letter_topic(admin, "jobs", "jobs.dlq")
    assert "max.message.bytes 10485760" in caplog.text


class HeaderedMessage(FakeMessage):
    def __init__(self, value: bytes, key: bytes | None = b"cluster/4711",
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        super().__init__("jobs", 2, 41, value)
        self._key = key
        self._headers = headers

    def key(self) -> Any:
        return self._key

    def headers(self) -> Any:
        return self._headers


def test_a_pointer_record_says_where_the_original_is_and_is_small() -> None:
    original = HeaderedMessage(b"v" * 1000, headers=[("traceparent", b"t" * 5000)])
    key, value, headers = pointer_record(
        DeadLetter(original, "corrupt-body", "bad avro " * 1000, "sarchive-archive"),
        "Broker: Message size too large")
    assert key == b"cluster/4711"
    assert json.loads(value) == {"topic": "jobs", "partition": 2, "offset": 41,
                                 "size": 12 + 1000 + len("traceparent") + 5000,
                                 "reason": "corrupt-body", "consumer": "sarchive-archive"}
    named = dict(headers)
    assert "traceparent" not in named
    assert named["sarchive-dlq-reason"] == REASON_TOO_LARGE.encode()
    assert named["sarchive-dlq-source-offset"] == b"41"
    assert named["sarchive-dlq-original-size"] == str(6023).encode()
    assert b"jobs[2]@41" in named["sarchive-dlq-detail"]
    assert len(value) + sum(len(k) + len(v) for k, v in headers) < 4096


def test_a_pointer_record_leaves_out_a_large_key() -> None:
    key, _, _ = pointer_record(
        DeadLetter(HeaderedMessage(b"v", key=b"k" * 5000), "r", "d", "c"), "too large")
    assert key is None


class SizeLimitedProducer:
    """A dead-letter producer: produce() refuses what exceeds local_limit (as librdkafka does
    with message.max.bytes), flush() reports what exceeds topic_limit as MSG_SIZE_TOO_LARGE
    (as the broker does for the topic's max.message.bytes); other_error fails everything."""

    def __init__(self, local_limit: int, topic_limit: int) -> None:
        self.local_limit = local_limit
        self.topic_limit = topic_limit
        self.queued: list[tuple[bytes | None, bytes, dict[str, bytes], Callable[..., None]]] = []
        self.stored: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
        self.produce_error: KafkaError | None = None

    def __call__(self, properties: dict[str, object]) -> SizeLimitedProducer:
        return self

    def produce(self, topic: str, *, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]], on_delivery: Callable[..., None]) -> None:
        if self.produce_error is not None:
            raise KafkaException(self.produce_error)
        if len(value) > self.local_limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.queued.append((key, value, dict(headers), on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for key, value, headers, on_delivery in queued:
            if len(value) > self.topic_limit:
                on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                self.stored.append((key, value, headers))
                on_delivery(None, None)
        return 0


def publisher(producer: SizeLimitedProducer) -> DeadLetterPublisher:
    return DeadLetterPublisher(ConsumerSettings(topic="jobs"), producer)


@pytest.mark.parametrize(("local_limit", "topic_limit"), [
    (1000, 10_000),  # the producer refuses it at produce(): the DLQ headers made it too large
    (10_000, 1000),  # the topic refuses it in the delivery report: a smaller topic limit
])
def test_an_original_the_dead_letter_topic_refuses_is_replaced_by_its_pointer_record(
        local_limit: int, topic_limit: int) -> None:
    producer = SizeLimitedProducer(local_limit, topic_limit)
    dead_letters = publisher(producer)
    dead_letters.publish(HeaderedMessage(b"x" * 5000), "corrupt-body", "bad", "consumer")
    dead_letters.publish(HeaderedMessage(b"small"), "corrupt-body", "bad", "consumer")
    assert dead_letters.flush(1.0) == 1
    reasons = sorted(headers["sarchive-dlq-reason"] for _, _, headers in producer.stored)
    assert reasons == [b"corrupt-body", REASON_TOO_LARGE.encode()]
    pointer = next(v for _, v, h in producer.stored if h["sarchive-dlq-reason"] != b"corrupt-body")
    assert json.loads(pointer)["offset"] == 41
    assert dead_letters.flush(1.0) == 0


def test_another_produce_error_is_a_retryable_dead_letter_failure_not_a_crash() -> None:
    producer = SizeLimitedProducer(10_000, 10_000)
    producer.produce_error = KafkaError(KafkaError._UNKNOWN_TOPIC)
    with pytest.raises(DeadLetterUnavailableError, match=r"dead-letter topic 'jobs\.dlq'"):
        publisher(producer).publish(HeaderedMessage(b"x"), "corrupt-body", "bad", "consumer")
