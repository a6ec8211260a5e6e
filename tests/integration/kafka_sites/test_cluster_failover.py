"""The job archive on a three-broker cluster (replication factor 3, min.insync.replicas=2, no
unclean leader election), the bar of Kafka's own replication tests: every acknowledged job is
consumed after leader bounces. Brokers are killed with SIGKILL, restarted one by one, or left
down, while jobs stream through the producer and both consumers; each job lands in the archive
and in Elasticsearch exactly once, and the producer never stops watching the spool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from elasticsearch import Elasticsearch

from infra.kafka_cluster import BROKERS
from testkit.secure_kafka import topic_job_ids

Harness = Any  # the harness types live in conftest.py files, which tests cannot import

STREAM_JOBS = 5000
STREAM_BATCH = 50  # jobs written into the spool at a time, STREAM_PAUSE apart
STREAM_PAUSE = 0.2
OUTBOX = "sarchive_producer_outbox_events"
PUBLISHED = "sarchive_producer_jobs_published_total"
DETECTED = "sarchive_producer_jobs_detected_total"
DETECTION_LAG_MAX = 15.0  # seconds from the last spool write until the producer has it


def write_jobs(spool: Harness, first: int, count: int) -> set[str]:
    for job_id in range(first, first + count):
        spool.write_job(job_id, f"#!/bin/bash\n#SBATCH --job-name=f{job_id}\necho {job_id}\n"
                        .encode())
    return {str(job_id) for job_id in range(first, first + count)}


class Sampler(threading.Thread):
    """Reads the producer's metrics every 0.1 s: the outbox peak and when jobs were acked."""

    def __init__(self, producer: Harness) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.outbox_peak = 0.0
        self.published: list[tuple[float, float]] = []  # (time, jobs published)
        self.all_detected_at: float | None = None  # when the last job was detected
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            outbox, published = self.producer.metric(OUTBOX), self.producer.metric(PUBLISHED)
            if self.all_detected_at is None and self.producer.metric(DETECTED) == STREAM_JOBS:
                self.all_detected_at = time.monotonic()
            if outbox is not None and published is not None:
                self.outbox_peak = max(self.outbox_peak, outbox)
                self.published.append((time.monotonic(), published))

    def recovered_after(self, moment: float, jobs: float = 100) -> float | None:
        """Seconds from moment until `jobs` more were acknowledged than at moment."""
        before = max((n for t, n in self.published if t <= moment), default=0.0)
        return next((t - moment for t, n in self.published if t > moment and n >= before + jobs),
                    None)


def test_job_stream_survives_leader_kill_and_rolling_restart_exactly_once(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        kafka_cluster: Harness, cluster_topics: Harness, make_pipeline: Callable[..., Harness],
        synthetic_spool: Harness, es: Elasticsearch,
        report_figures: Callable[[str], None]) -> None:
    pipeline = make_pipeline(cluster_topics)
    kafka = ["--brokers", kafka_cluster.bootstrap]
    producer = pipeline.producer(kafka, synthetic_spool.root, "failover")
    archive = pipeline.archive(kafka)
    elastic = pipeline.elastic(kafka)
    sampler = Sampler(producer)
    sampler.start()
    started = time.monotonic()
    writer_done: list[float] = []

    def stream() -> None:
        for first in range(1, STREAM_JOBS + 1, STREAM_BATCH):
            if first > 1:
                time.sleep(STREAM_PAUSE)
            write_jobs(synthetic_spool, first, STREAM_BATCH)
        writer_done.append(time.monotonic())
    writer = threading.Thread(target=stream, daemon=True)
    writer.start()

    def published_at_least(count: int) -> Callable[[], bool]:
        return lambda: (producer.metric(PUBLISHED) or 0) >= count

    producer.wait_until(published_at_least(STREAM_JOBS // 5), 120, "a fifth of the jobs acked")
    victim = kafka_cluster.leaders(cluster_topics.topic)[0]
    killed_at = time.monotonic()
    kafka_cluster.broker(victim).kill()
    producer.wait_until(lambda: victim not in kafka_cluster.leaders(cluster_topics.topic), 60,
                        f"every partition led by a broker other than {victim}")
    moved_at = time.monotonic()
    producer.wait_until(lambda: sampler.recovered_after(moved_at) is not None, 120,
                        f"deliveries resume after broker {victim} was killed")
    recovery = moved_at - killed_at + (sampler.recovered_after(moved_at) or 0.0)
    kafka_cluster.start(victim)
    kafka_cluster.wait_fully_replicated()
    for node_id in BROKERS:  # a rolling restart, as for an upgrade: one broker at a time
        kafka_cluster.broker(node_id).down()
        kafka_cluster.start(node_id)
        kafka_cluster.wait_fully_replicated()
    writer.join(300)
    assert writer_done, "the spool writer did not finish"
    producer.wait_until(lambda: sampler.all_detected_at is not None, 60,
                        "every job written to the spool is detected")
    assert sampler.all_detected_at is not None
    # Detection (spool read, outbox append) does not wait for the brokers: the outage and
    # the restarts above do not hold up the spool watch.
    detection_lag = sampler.all_detected_at - writer_done[0]
    assert detection_lag < DETECTION_LAG_MAX, detection_lag

    def in_both_sinks() -> bool:
        for process in (producer, archive, elastic):
            assert process.alive(), process.log_tail()
        return (len(pipeline.archived_scripts()) == STREAM_JOBS
                and len(pipeline.indexed(es)) == STREAM_JOBS)
    producer.wait_until(in_both_sinks, 300, f"all {STREAM_JOBS} jobs archived and indexed",
                        interval=1.0, context=pipeline.logs)
    sampler.stopped.set()
    total = time.monotonic() - started

    expected = {str(n) for n in range(1, STREAM_JOBS + 1)}
    archived, indexed = pipeline.archived_scripts(), pipeline.indexed(es)
    assert set(archived) == expected and set(archived.values()) == {1}
    assert set(indexed) == expected and set(indexed.values()) == {1}
    on_topic = topic_job_ids({"bootstrap.servers": kafka_cluster.bootstrap},
                             cluster_topics.topic, timeout=120)
    assert set(on_topic) == expected
    report_figures(
        f"failover: {STREAM_JOBS} jobs in {total:.1f} s through a SIGKILL of leader broker"
        f" {victim} and a rolling restart of brokers {list(BROKERS)}; leaders moved"
        f" {moved_at - killed_at:.1f} s and deliveries resumed (100 more jobs acked)"
        f" {recovery:.1f} s after the kill; outbox peak {sampler.outbox_peak:.0f} events; all"
        f" jobs detected {detection_lag:.1f} s after the last was written;"
        f" {len(on_topic) - STREAM_JOBS} duplicates on the topic, none in the archive or the"
        " index")
    assert pipeline.stop_all() == [0, 0, 0], pipeline.logs()


def test_outbox_holds_events_while_one_broker_of_three_is_left_and_delivers_when_a_second_returns(
        kafka_cluster: Harness, cluster_topics: Harness, make_pipeline: Callable[..., Harness],
        synthetic_spool: Harness) -> None:
    pipeline = make_pipeline(cluster_topics)
    # Short attempts: a refused event comes back to the outbox and is produced again.
    producer = pipeline.producer(["--brokers", kafka_cluster.bootstrap], synthetic_spool.root,
                                 "failover", "--kafka-property", "message.timeout.ms=5000")
    jobs = write_jobs(synthetic_spool, 1, 20)
    producer.wait_until(lambda: producer.metric(PUBLISHED) == 20, 60, "20 jobs acked")

    first, second, last = BROKERS
    kafka_cluster.broker(first).kill()
    jobs |= write_jobs(synthetic_spool, 21, 20)
    producer.wait_until(lambda: producer.metric(PUBLISHED) == 40, 120,
                        "20 more jobs acked by the two brokers left")

    kafka_cluster.broker(second).kill()
    # Messages appended while a second replica was in sync are acknowledged even once it has
    # left (min.insync.replicas is checked at append): new jobs come after the ISR shrank.
    producer.wait_until(lambda: kafka_cluster.in_sync_replicas(cluster_topics.topic) == {last},
                        60, f"broker {last} is the only replica in sync")
    def failures() -> float:
        return sum(producer.metric("sarchive_producer_delivery_failures_total",
                                   {"kind": kind}) or 0 for kind in ("timed-out", "retriable"))
    failed_before = failures()
    jobs |= write_jobs(synthetic_spool, 41, 20)
    producer.wait_until(lambda: producer.metric(OUTBOX) == 20, 60, "the 20 jobs in the outbox")
    producer.wait_until(lambda: failures() >= failed_before + 20, 120,
                        "each delivery to the lone broker fails and is retried")
    assert producer.metric(OUTBOX) == 20
    assert producer.metric(PUBLISHED) == 40
    assert producer.metric(DETECTED) == 60  # the spool watch goes on

    kafka_cluster.start(first)
    producer.wait_until(lambda: producer.metric(OUTBOX) == 0, 120,
                        f"the outbox is delivered once broker {first} is back")
    assert producer.metric(PUBLISHED) == 60
    assert set(topic_job_ids({"bootstrap.servers": kafka_cluster.bootstrap},
                             cluster_topics.topic)) == jobs
    assert producer.stop() == 0
