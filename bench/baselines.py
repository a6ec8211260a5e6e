"""Baselines: the same payloads through the bare libraries, with our services' settings.

Each baseline does what the stage it stands beside does, minus everything of ours:
- R_prod: produce the pre-encoded events with the producer's own librdkafka properties
  (producer.config.kafka_producer_properties), poll(0) after each produce, flush at the end;
- R_cons: consume them with the consumers' own properties and batch size
  (consumers.common.settings), decode each with JobEventCodec, throw it away;
- R_fs: write the archive's files for those events with the archive's own writer and
  durability policy (temporary file, fsync, link, directory fsync once per batch, same
  batch size) in a tight loop, without Kafka;
- R_es: elasticsearch.helpers.streaming_bulk of the same documents (consumers.elastic
  build_document), into indices made by the same template, with the same batch limits.
Rates are counted the way the stages count theirs: from the end of the first batch to the
end of the last, so client start-up and group joins weigh on neither side.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, Producer
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk
from harness import (
    QUIET_LOGGER,
    BenchError,
    Record,
    batch_ends,
    percentile,
    progress_rate,
    read_topic,
    unique_name,
)
from prometheus_client import CollectorRegistry

from consumers.archive.config import ArchiveConfig
from consumers.archive.sink import ArchiveSink
from consumers.common.settings import ConsumerSettings, consumer_properties
from consumers.elastic.documents import build_document, index_name
from consumers.elastic.template import index_template, template_name
from producer.config import kafka_producer_properties, load_producer_config
from schemas.codec import JobEventCodec
from schemas.model import JobEvent

BUFFER_FULL_WAIT = 0.05
WARM_UP_KEY = b"bench-warm-up"


# --------------------------------------------------------------------------- R_prod


def producer_properties(bootstrap: str, topic: str) -> dict[str, str]:
    """The librdkafka properties sarchive-producer runs with, from its own function."""
    with tempfile.TemporaryDirectory(prefix="bench-props-") as state:
        config = load_producer_config(["--cluster", "bench", "--brokers", bootstrap,
                                       "--topic", topic, "--state-dir", state], environ={})
    return kafka_producer_properties(config)


def quiet(properties: dict[str, str]) -> dict[str, Any]:
    """The same properties, with librdkafka's log lines kept out of the benchmark's output."""
    return {**properties, "logger": QUIET_LOGGER}


@dataclass
class Acks:
    pending: int
    failed: int = 0
    error: str = ""

    def __call__(self, err: KafkaError | None, message: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.failed += 1
            self.error = str(err)


def produce_one(producer: Producer, topic: str, record: Record, acks: Acks) -> None:
    while True:
        try:
            producer.produce(topic, value=record.value, key=record.key,
                             headers=list(record.headers), on_delivery=acks)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(BUFFER_FULL_WAIT)


def r_prod(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    """Events/s from the first produce() to the last acknowledgement."""
    producer = Producer(quiet(producer_properties(bootstrap, topic)))
    acks = Acks(pending=len(records))
    started = time.perf_counter()
    for record in records:
        produce_one(producer, topic, record, acks)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if remaining or acks.failed:
        raise BenchError(f"R_prod: {remaining} unflushed, {acks.failed} failed: {acks.error}")
    return len(records) / elapsed


def r_prod_latency(bootstrap: str, topic: str, records: Sequence[Record],
                   rate: float) -> dict[str, float]:
    """produce() to the broker's append time (LogAppendTime topic), paced at `rate`/s: the
    part of the producer's latency that is librdkafka and the broker (linger.ms included)."""
    producer = Producer(quiet(producer_properties(bootstrap, topic)))
    acks = Acks(pending=len(records) + 1)
    # A running producer has its connection and idempotence PID: get them before timing.
    produce_one(producer, topic, Record(WARM_UP_KEY, records[0].value, (), 0), acks)
    producer.flush(60)
    sent: dict[bytes, float] = {}
    start = time.monotonic()
    for index, record in enumerate(records):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            producer.poll(delay)
        sent[record.key] = time.time()
        produce_one(producer, topic, record, acks)
    if producer.flush(120) or acks.failed:
        raise BenchError(f"R_prod latency: {acks.failed} failed: {acks.error}")
    appended = read_topic(bootstrap, topic, len(records) + 1, 120)
    latencies = [(r.timestamp_ms / 1000 - sent[r.key]) * 1000 for r in appended
                 if r.key != WARM_UP_KEY]
    return latency_summary(latencies)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(latencies_ms, 0.5), "p99_ms": percentile(latencies_ms, 0.99),
            "p999_ms": percentile(latencies_ms, 0.999), "max_ms": max(latencies_ms),
            "count": float(len(latencies_ms))}


# --------------------------------------------------------------------------- R_cons


BatchSettings = TypeVar("BatchSettings", ConsumerSettings, ArchiveConfig)


def _with_batch(settings: BatchSettings, batch: int | None) -> BatchSettings:
    """The settings with a batch size other than the services' default (smoke runs)."""
    return settings if batch is None else replace(settings, batch_max_messages=batch)


def r_cons(bootstrap: str, topic: str, expected: int, *, batch: int | None = None,
           timeout: float = 300) -> float:
    """Events/s consumed and decoded, with the consumers' properties and batch size."""
    settings = _with_batch(ConsumerSettings(brokers=bootstrap, topic=topic,
                                            group=unique_name("r-cons")), batch)
    consumer = Consumer(quiet(consumer_properties(settings)))
    codec = JobEventCodec()
    timeline: list[tuple[float, int]] = []
    done = 0
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while done < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"R_cons: {done} of {expected} in {timeout:.0f} s")
            messages = consumer.consume(settings.batch_max_messages, settings.batch_timeout)
            for message in messages:
                if message.error() is None:
                    codec.decode(message.value() or b"")
                    done += 1
            if messages:
                timeline.append((time.time(), done))
    finally:
        consumer.close()
    return progress_rate(timeline)


# --------------------------------------------------------------------------- R_fs


def r_fs(events: Sequence[JobEvent], workdir: Path, *, batch: int | None = None) -> float:
    """Events/s through the archive's own sink (consumers.archive.sink.ArchiveSink) with its
    defaults, in an empty `workdir`, batch after batch in a tight loop: the same placement,
    duplicate checks, temporary files, fsyncs, links and directory fsyncs, without Kafka."""
    config = _with_batch(ArchiveConfig(archive=workdir, brokers="unused:9092"), batch)
    sink = ArchiveSink(config, CollectorRegistry())
    timeline: list[tuple[float, int]] = []
    try:
        sink.prepare()
        for start in range(0, len(events), config.batch_max_messages):
            chunk = events[start:start + config.batch_max_messages]
            if sink.write_batch(chunk):
                raise BenchError("R_fs: the archive refused events")
            timeline.append((time.time(), start + len(chunk)))
    finally:
        sink.close()
    return progress_rate(timeline)


# --------------------------------------------------------------------------- R_es


def es_client(url: str) -> Elasticsearch:
    return Elasticsearch(url, request_timeout=120)


def r_es(url: str, events: Sequence[JobEvent], prefix: str, chunk_size: int,
         max_chunk_bytes: int) -> float:
    """Documents/s through streaming_bulk: same documents, template and batch limits."""
    client = es_client(url)
    client.indices.put_index_template(name=template_name(prefix), body=index_template(prefix))
    actions = [{"_op_type": "create", "_index": index_name(prefix, e.submit_time),
                "_id": e.job_key, "_source": build_document(e)} for e in events]
    timeline: list[tuple[float, int]] = []
    failed = 0
    try:
        for done, (ok, _) in enumerate(
                streaming_bulk(client, actions, chunk_size=chunk_size,
                               max_chunk_bytes=max_chunk_bytes, raise_on_error=False,
                               raise_on_exception=True), start=1):
            failed += not ok
            timeline.append((time.time(), done))
    finally:
        delete_es_prefix(client, prefix)
    if failed:
        raise BenchError(f"R_es: {failed} of {len(actions)} documents refused")
    # streaming_bulk yields every item of a chunk at once when its response arrives.
    return progress_rate(batch_ends(timeline))


def delete_es_prefix(client: Elasticsearch, prefix: str) -> None:
    """Delete the benchmark's indices and template (by name: wildcard deletes are refused)."""
    found = client.indices.get(index=f"{prefix}-*", allow_no_indices=True,
                               ignore_unavailable=True)
    if found.body:
        client.indices.delete(index=",".join(found.body))
    client.options(ignore_status=404).indices.delete_index_template(name=template_name(prefix))


def decode_all(records: Sequence[Record]) -> list[JobEvent]:
    codec = JobEventCodec()
    return [codec.decode(r.value) for r in records]
