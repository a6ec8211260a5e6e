"""Helpers for the archive consumer's integration tests: real events on the real broker,
sarchive-archive as a real subprocess, and views of the archive and the consumer group."""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.codec import JobEventCodec
from schemas.limits import MAX_MESSAGE_BYTES
from schemas.model import JobEvent
from schemas.wire import message_headers, message_key
from testkit.events import job_event
from testkit.processes import ServiceProcess, free_port
from testkit.waiting import wait_until

ARCHIVE_COMMAND = str(Path(sys.executable).with_name("sarchive-archive"))
# sarchive-archive that SIGKILLs itself on its Nth link(2): a crash at an exact point of a
# batch, some files of it in place, others still without their name, nothing committed.
# "named" makes it find no O_TMPFILE, so that it writes named temporary files (the fallback
# for file systems without O_TMPFILE).
CRASH_AT_LINK = """
import os, signal, sys
limit, calls, real_link = int(sys.argv.pop(1)), 0, os.link
if sys.argv.pop(1) == "named":
    import consumers.archive.writer
    consumers.archive.writer.TMPFILE_FLAGS = None
def link(*args, **kwargs):
    global calls
    calls += 1
    if calls == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_link(*args, **kwargs)
os.link = link
from consumers.archive.main import main
sys.exit(main(sys.argv[1:]))
"""
DAY_MS = 86_400_000
FIRST_SUBMIT_MS = 1_710_545_400_000  # 2024-03-15 23:30 UTC


def slurm_event(number: int, *, cluster: str = "clusterA", job_id: str | None = None,
                user: str | None = None, script_bytes: int = 0) -> JobEvent:
    """A Slurm job event as the producer builds it, different for every number: jobs spread
    over several days and users, environment in Slurm's spool format."""
    job_id = job_id if job_id is not None else str(10_000 + number)
    user = user if user is not None else f"user{number % 3}"
    submit = FIRST_SUBMIT_MS + (number % 4) * DAY_MS + number * 1000
    script = (f"#!/bin/bash\n#SBATCH --job-name=job{number}\nsrun ./work {number}\n".encode()
              + b"#" * script_bytes)
    return job_event(
        cluster=cluster, job_id=job_id, submit_time=submit, read_time=submit + 40,
        script=script, environment=f"USER={user}\0HOME=/home/{user}\0MULTI=a=b\nc\0".encode(),
        producer_host="head1", user=user, job_name=f"job{number}",
        directives={"job-name": f"job{number}"},
    )


def expected_files(event: JobEvent) -> dict[str, bytes]:
    """The default layout's data files of a Slurm event (period daily)."""
    day = time.strftime("%Y%m%d", time.gmtime(event.submit_time / 1000))
    environment = next(f.content for f in event.spool_files if f.name == "environment")
    return {
        f"{day}/job.{event.job_id}_script": event.script,
        f"{day}/job.{event.job_id}_environment": environment,
    }


def produce(bootstrap: str, topic: str, events: Sequence[JobEvent],
            codec: JobEventCodec | None = None) -> list[tuple[int, int]]:
    """Produce events as the producer does (or as one of an older version's codec); their
    (partition, offset), in the same order."""
    codec = codec or JobEventCodec()
    return produce_raw(
        bootstrap,
        topic,
        [(message_key(e.job_key), codec.encode(e)) for e in events],
        headers=message_headers(codec),
    )


def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[tuple[int, int]]:
    """Produce (key, value) messages; their (partition, offset), in the same order."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "message.max.bytes": str(MAX_MESSAGE_BYTES)}
    )
    failures: list[str] = []
    coordinates: list[tuple[int, int]] = [(-1, -1)] * len(messages)

    def delivered_as(index: int) -> Callable[[object, Message], None]:
        def delivered(error: object, message: Message) -> None:
            if error is not None:
                failures.append(str(error))
            else:
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None, "delivered nowhere"
                coordinates[index] = (partition, offset)

        return delivered

    for index, (key, value) in enumerate(messages):
        producer.produce(
            topic, key=key, value=value, headers=None if headers is None else list(headers),
            on_delivery=delivered_as(index),
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []
    return coordinates


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sarchive-test-probe"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed: list[TopicPartition] = []
        errors: list[KafkaException] = []

        def answered() -> bool:
            try:
                committed[:] = consumer.committed(
                    [TopicPartition(topic, p) for p in partitions], timeout=10)
            except KafkaException as exc:  # NOT_COORDINATOR and the like, while groups move
                errors.append(exc)
                return False
            return True
        wait_until(answered, 60, f"the committed offsets of group {group} are available",
                   interval=0.5, context=lambda: f"last error: {errors[-1:]}")
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """The first count messages of topic, from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


def tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file below root: sha256, mode and mtime_ns, to tell that nothing changed."""
    state: dict[str, tuple[str, int, int]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_file():
            state[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                info.st_mode,
                info.st_mtime_ns,
            )
    return state


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".sarchive-tmp-*") if p.is_file()]


@dataclass
class ArchiveRunner:
    """Starts sarchive-archive processes against one topic and archive root."""

    bootstrap: str
    topic: str
    root: Path
    logs: Path
    group: str = field(default_factory=lambda: f"archive-{uuid.uuid4().hex[:8]}")
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, *extra: str, group: str | None = None, archive: Path | None = None,
              crash_at_link: int | None = None, named_temporaries: bool = False,
              metrics: bool = False, instance_id: str | None = None,
              brokers: str | None = None) -> ServiceProcess:
        """sarchive-archive on the topic; archive defaults to the runner's root.
        named_temporaries (with crash_at_link): as on a file system without O_TMPFILE.
        metrics: it serves /metrics on a free port (ServiceProcess.metric reads it).
        instance_id: its static group membership id; by default one of its own, as two
        instances on one host must have (the same id is a restart of the same member)."""
        port = free_port() if metrics else None
        instance_id = instance_id or f"{group or self.group}-{len(self.started)}"
        if port is not None:
            extra = (*extra, "--metrics-address", "127.0.0.1", "--metrics-port", str(port))
        args = [
            "--brokers",
            brokers or self.bootstrap,
            "--topic",
            self.topic,
            "--archive",
            str(archive or self.root),
            "--group",
            group or self.group,
            # The fixtures' submit times show the UTC day; a test may pass another zone.
            "--time-zone",
            "UTC",
            "--batch-timeout",
            "0.2",
            "--retry-backoff-initial",
            "0.2",
            "--retry-backoff-max",
            "1",
            # A killed member's partitions move after the session timeout: keep it short.
            "--kafka-property",
            "session.timeout.ms=6000",
            "--kafka-property",
            "heartbeat.interval.ms=500",
            "--group-instance-id",
            instance_id,
            *extra,
        ]
        command = ([ARCHIVE_COMMAND] if crash_at_link is None else
                   [sys.executable, "-c", CRASH_AT_LINK, str(crash_at_link),
                    "named" if named_temporaries else "unnamed"])
        process = ServiceProcess("sarchive-archive", command + args,
                                 self.logs / f"archive-{len(self.started)}.log",
                                 metrics_port=port)
        self.started.append(process.start())
        return process

    def committed(self, group: str | None = None) -> dict[int, int]:
        return committed_offsets(self.bootstrap, group or self.group, self.topic)

    def end_offsets(self) -> dict[int, int]:
        return end_offsets(self.bootstrap, self.topic)

    def produce(self, events: Sequence[JobEvent],
                codec: JobEventCodec | None = None) -> list[tuple[int, int]]:
        return produce(self.bootstrap, self.topic, events, codec)

    def produce_raw(
        self,
        messages: Sequence[tuple[bytes, bytes]],
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> list[tuple[int, int]]:
        return produce_raw(self.bootstrap, self.topic, messages, headers)

    def read_topic(self, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
        return read_topic(self.bootstrap, topic, count, timeout)

    def archived(self) -> dict[str, bytes]:
        """Every file below the root with its bytes."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    def tree(self) -> dict[str, tuple[str, int, int]]:
        return tree(self.root)

    def temporary_files(self) -> list[Path]:
        return temporary_files(self.root)

    @staticmethod
    def expected_files(event: JobEvent) -> dict[str, bytes]:
        return expected_files(event)

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(condition, timeout, what)

    def wait_committed_to_end(self, timeout: float = 60.0, group: str | None = None) -> None:
        ends = end_offsets(self.bootstrap, self.topic)
        group = group or self.group
        # An empty partition has nothing to commit: the group never commits it at all.
        wanted = {partition: end for partition, end in ends.items() if end > 0}

        def committed_to_end() -> bool:
            committed = committed_offsets(self.bootstrap, group, self.topic)
            return {p: committed.get(p) for p in wanted} == wanted

        def state() -> str:
            logs = "\n".join(f"--- {p.log_path.name}:\n{p.log()[-3000:]}" for p in self.started)
            return (f"committed: {committed_offsets(self.bootstrap, group, self.topic)}\n"
                    f"{logs}")
        wait_until(committed_to_end, timeout, f"group {group} has committed {ends}",
                   interval=0.2, context=state)


@pytest.fixture
def make_slurm_event() -> Callable[..., JobEvent]:
    return slurm_event


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    return root


@pytest.fixture
def archive_runner(
    kafka_bootstrap: str, kafka_topic: str, archive_root: Path, tmp_path: Path
) -> Iterator[ArchiveRunner]:
    logs = tmp_path / "logs"
    logs.mkdir()
    runner = ArchiveRunner(kafka_bootstrap, kafka_topic, archive_root, logs)
    yield runner
    for process in runner.started:
        process.kill()
    # The broker creates the dead-letter topic on first use; the test's topic goes, so does it.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    with contextlib.suppress(Exception):
        admin.delete_topics([f"{kafka_topic}.dlq"])[f"{kafka_topic}.dlq"].result(timeout=30)
