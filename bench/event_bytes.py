"""Bytes per job event, schema version 1 against the version the producer writes, on the same
events: in the producer's outbox and on the wire.

- outbox: each event encoded by the version's codec and appended, with its metadata, to a real
  producer.outbox.Outbox; its record bytes (what the outbox writes and fsyncs) per event;
- wire: the same encoded events produced with the producer's own librdkafka properties
  (producer.config.kafka_producer_properties: zstd, linger.ms...) to a fresh topic; the sum of
  the record batches librdkafka sent, after compression (its statistics' per-topic
  `batchsize` window, summed over every statistics interval), per event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from baselines import BUFFER_FULL_WAIT, producer_properties, quiet
from confluent_kafka import Producer
from harness import BenchError, scratch

from producer.event_meta import EventMeta
from producer.outbox import Outbox
from schemas.codec import JobEventCodec
from schemas.model import JobEvent
from schemas.wire import message_headers, message_key

STATS_INTERVAL_MS = 100
OLDEST = 1  # the version the issue compares with


def outbox_bytes(events: Sequence[JobEvent], codec: JobEventCodec, workdir: Path) -> float:
    outbox = Outbox.open(workdir, max_bytes=1 << 40, max_events=len(events) + 1)
    try:
        for event in events:
            meta = EventMeta(event.job_key, event.job_id, event.cluster, event.submit_time,
                             event.job_id)
            outbox.append(meta, codec.encode(event))
        outbox.commit()
        return outbox.event_bytes / len(events)
    finally:
        outbox.close()


class _BatchBytes:
    """librdkafka's statistics callback: adds up the bytes of the topic's sent batches."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.total = 0
        self.reports = 0

    def __call__(self, stats_json: str) -> None:
        topic = json.loads(stats_json).get("topics", {}).get(self.topic)
        if topic is not None:
            self.total += topic["batchsize"]["sum"]
        self.reports += 1


def wire_bytes(bootstrap: str, topic: str, events: Sequence[JobEvent],
               codec: JobEventCodec) -> float:
    batches = _BatchBytes(topic)
    producer = Producer({**quiet(producer_properties(bootstrap, topic)),
                         "statistics.interval.ms": str(STATS_INTERVAL_MS),
                         "stats_cb": batches})
    # A list of the wider tuples confluent's stubs want (lists are invariant).
    headers: list[tuple[str, str | bytes | None]] = list(message_headers(codec))
    for event in events:
        value, key = codec.encode(event), message_key(event.job_key)
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                producer.poll(0)
                break
            except BufferError:
                producer.poll(BUFFER_FULL_WAIT)
    if producer.flush(120):
        raise BenchError(f"event bytes: events of v{codec.schema_version} not delivered")
    # Every batch is acknowledged: the next report closes the window that holds the last.
    reports, deadline = batches.reports, time.monotonic() + 10
    while batches.reports <= reports:
        if time.monotonic() > deadline:
            raise BenchError("event bytes: librdkafka sent no statistics")
        producer.poll(STATS_INTERVAL_MS / 1000)
    return batches.total / len(events)


def measure(bootstrap: str, new_topic: Callable[[str], str],
            events: Sequence[JobEvent]) -> dict[str, float]:
    """bytes/event in the outbox and on the wire for version 1 and the producer's version."""
    if not events:
        raise BenchError("event bytes: no events")
    figures: dict[str, float] = {}
    for name, codec in (("v1", JobEventCodec(write_version=OLDEST)),
                        ("produced", JobEventCodec())):
        with scratch(f"outbox-{name}") as workdir:
            figures[f"event_bytes.{name}.outbox"] = outbox_bytes(events, codec, workdir)
        figures[f"event_bytes.{name}.wire"] = wire_bytes(
            bootstrap, new_topic(f"event-bytes-{name}"), events, codec)
    return figures
