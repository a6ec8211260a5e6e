"""Poison messages and path-traversal attempts: dead-lettered with their reasons, the
consumer moves on, and nothing is written outside the archive root."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.codec import MAGIC, JobEventCodec
from schemas.limits import MAX_MESSAGE_BYTES, MIB
from schemas.model import JobEvent
from schemas.wire import message_key

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner

MakeEvent = Callable[..., JobEvent]


def header_values(message: Message) -> dict[str, bytes]:
    """A consumed message's headers by name (consumed headers are (name, bytes) pairs)."""
    pairs = message.headers() or []
    assert isinstance(pairs, list)
    return {name: value for name, value in pairs if isinstance(value, bytes)}


def test_each_kind_of_poison_goes_to_the_dead_letter_topic_with_why_and_where(
        archive_runner: ArchiveRunner, make_slurm_event: MakeEvent, tmp_path: Path) -> None:
    runner = archive_runner
    codec = JobEventCodec()
    # A name no other test (of this or a concurrent session) writes: what a traversal could
    # create outside the archive is looked for by it in the whole session's directory.
    escape = f"escape-{uuid.uuid4().hex[:12]}"
    good = [make_slurm_event(i) for i in range(3)]
    valid = codec.encode(good[0])
    refused = {
        "not-single-object": b"#!/bin/bash\necho not avro\n",
        "unknown-schema": MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + valid[10:],
        "corrupt-body": valid[:10] + b"\xff" * 40,
        "trailing": valid + b"extra",
        "job-id-traversal": codec.encode(make_slurm_event(10, job_id=f"../../../{escape}")),
        "job-id-separator": codec.encode(make_slurm_event(11, job_id="47/11")),
        "cluster-traversal": codec.encode(make_slurm_event(12, cluster="..")),
        "user-traversal": codec.encode(make_slurm_event(13, user=f"../../{escape}")),
        "job-id-nul": codec.encode(make_slurm_event(14, job_id=f"4711\0{escape}")),
        "overlong-job-id": codec.encode(make_slurm_event(15, job_id="9" * 300)),
    }
    expected_reason = {
        "not-single-object": "not-single-object", "unknown-schema": "unknown-schema",
        "corrupt-body": "corrupt-body", "trailing": "corrupt-body",
        "job-id-traversal": "unsafe-path", "job-id-separator": "unsafe-path",
        "cluster-traversal": "unsafe-path", "user-traversal": "unsafe-path",
        "job-id-nul": "unsafe-path", "overlong-job-id": "name-too-long",
    }
    messages = [(message_key(good[0].job_key), codec.encode(good[0]))]
    messages += [(name.encode(), value) for name, value in refused.items()]
    messages += [(message_key(e.job_key), codec.encode(e)) for e in good[1:]]
    coordinates = runner.produce_raw(messages, headers=[("traceparent", b"00-abc-01")])
    process = runner.start()
    runner.wait_committed_to_end()
    assert process.stop() == 0

    dead = runner.read_topic(f"{runner.topic}.dlq", len(refused))
    assert len(dead) == len(refused)
    by_key = {(m.key() or b"").decode(): m for m in dead}
    assert sorted(by_key) == sorted(refused)
    for name, value in refused.items():
        message = by_key[name]
        headers = header_values(message)
        partition, offset = coordinates[1 + list(refused).index(name)]
        assert message.value() == value, name
        assert headers["sarchive-dlq-reason"].decode() == expected_reason[name], name
        assert headers["sarchive-dlq-consumer"] == b"sarchive-archive"
        assert headers["sarchive-dlq-source-topic"].decode() == runner.topic
        assert int(headers["sarchive-dlq-source-partition"]) == partition, name
        assert int(headers["sarchive-dlq-source-offset"]) == offset, name
        assert headers["sarchive-dlq-detail"], name
        assert headers["traceparent"] == b"00-abc-01"

    archived = runner.archived()
    expected: dict[str, bytes] = {}
    for event in good:
        expected.update(runner.expected_files(event))
    assert {p: c for p, c in archived.items() if not p.endswith(".json")} == expected
    outside = [p for p in tmp_path.parent.rglob("*") if escape in p.name]
    assert outside == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "logs"]


def pointed_at(record: Message) -> dict[str, object]:
    """The pointer record's JSON value, checked against its headers."""
    headers = header_values(record)
    assert headers["sarchive-dlq-reason"] == b"too-large-for-dlq"
    value = record.value()
    assert value is not None
    where: dict[str, object] = json.loads(value)
    assert int(headers["sarchive-dlq-source-offset"]) == where["offset"]
    assert int(headers["sarchive-dlq-original-size"]) == where["size"]
    return where


@pytest.mark.parametrize(("poison_bytes", "dlq_limit"), [
    # Just under the job topic's limit: with the dead-letter headers it exceeds the
    # dead-letter producer's (equal) limit, in the topic the consumer created at start.
    (MAX_MESSAGE_BYTES - 256, None),
    # The broker's default limit of an auto-created topic (10 MiB): the broker refuses it.
    (12 * MIB, 10 * MIB),
], ids=["just-under-the-limit", "dlq-with-the-brokers-10-mib-default"])
def test_a_poison_message_too_large_for_the_dead_letter_topic_leaves_a_pointer_and_never_stalls(
        archive_runner: ArchiveRunner, make_slurm_event: MakeEvent, poison_bytes: int,
        dlq_limit: int | None) -> None:
    runner = archive_runner
    dlq = f"{runner.topic}.dlq"
    if dlq_limit is not None:
        admin = AdminClient({"bootstrap.servers": runner.bootstrap})
        admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=1,
                                      config={"max.message.bytes": str(dlq_limit)})]
                            )[dlq].result(timeout=30)
    valid = make_slurm_event(1)
    key = message_key(valid.job_key)  # same key: the same partition, behind the poison
    coordinates = runner.produce_raw([(key, b"\xff" * poison_bytes),
                                      (key, JobEventCodec().encode(valid))])
    process = runner.start(metrics=True)
    runner.wait_committed_to_end()
    assert process.alive()
    assert runner.expected_files(valid).items() <= runner.archived().items()
    assert process.metric("sarchive_consumer_dead_letter_pointers_total",
                          {"service": "sarchive-archive"}) == 1
    assert process.stop() == 0

    [pointer] = runner.read_topic(dlq, 1)
    partition, offset = coordinates[0]
    assert pointed_at(pointer) == {
        "topic": runner.topic, "partition": partition, "offset": offset,
        "size": len(key) + poison_bytes, "reason": "not-single-object",
        "consumer": "sarchive-archive"}
    log = process.log()
    if dlq_limit is None:
        assert f"created dead-letter topic {dlq}: 3 partitions" in log
    else:
        assert f"dead-letter topic {dlq} has max.message.bytes {dlq_limit}" in log
