"""The local services are real: a broker that keeps data across restarts, and a Slurm cluster
whose slurmctld writes job scripts and environments the way sarchive's producer expects."""

from __future__ import annotations

import struct
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, Producer

from schemas.limits import MAX_MESSAGE_BYTES

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.conftest import KafkaControl, SlurmCluster



def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "enable.idempotence": True,
        }
    )
    errors: list[KafkaError] = []
    producer.produce(
        topic,
        key=key,
        value=value,
        on_delivery=lambda err, _msg: errors.append(err) if err else None,
    )
    assert producer.flush(30) == 0, "message not delivered within 30 s"
    assert not errors, errors


def _consume_one(bootstrap: str, topic: str, timeout: float = 30.0) -> tuple[bytes, bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": MAX_MESSAGE_BYTES,
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg.key() or b"", msg.value() or b""
    finally:
        consumer.close()
    raise AssertionError(f"no message on {topic} within {timeout} s")


def test_kafka_round_trip_of_a_large_message(kafka_bootstrap: str, kafka_topic: str) -> None:
    # Bigger than Kafka's 1 MiB default, as job environments can be: the raised limits hold.
    value = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    _produce(kafka_bootstrap, kafka_topic, b"job-1", value)
    assert _consume_one(kafka_bootstrap, kafka_topic) == (b"job-1", value)


def test_kafka_keeps_messages_across_a_restart(
    kafka_service: KafkaControl, kafka_topic: str
) -> None:
    _produce(kafka_service.bootstrap, kafka_topic, b"k", b"survives a restart")
    kafka_service.stop()
    assert not kafka_service.is_up()
    kafka_service.start()
    assert _consume_one(kafka_service.bootstrap, kafka_topic) == (b"k", b"survives a restart")


def _environment_entries(raw: bytes) -> list[bytes]:
    """Slurm's environment file: a uint32 count in the host's byte order, then NUL-terminated
    NAME=value entries."""
    (count,) = struct.unpack("=I", raw[:4])
    entries = raw[4:].split(b"\0")
    assert entries[-1] == b"", "every entry, the last one included, ends with a NUL"
    assert len(entries) - 1 == count
    return entries[:-1]


def test_sbatch_writes_script_and_environment_to_the_state_dir(slurm: SlurmCluster) -> None:
    script = b"#!/bin/bash\n#SBATCH --job-name=sarchive-probe\necho 'caf\xc3\xa9'\n"
    marker = uuid.uuid4().hex
    job_id = slurm.sbatch("--hold", script=script, env={"SARCHIVE_PROBE": marker})
    try:
        job_dir = slurm.wait_job_dir(job_id, timeout=30)
        assert job_dir == slurm.state_dir / f"hash.{int(job_id) % 10}" / f"job.{job_id}"
        # The script is stored verbatim plus one terminating NUL.
        assert (job_dir / "script").read_bytes() == script + b"\0"
        raw = (job_dir / "environment").read_bytes()
        entries = _environment_entries(raw)
        assert f"SARCHIVE_PROBE={marker}".encode() in entries
        # Native order is little-endian on x86-64; read big-endian the count would be absurd.
        assert sys.byteorder == "little"
        assert struct.unpack(">I", raw[:4])[0] != len(entries)
    finally:
        slurm.scancel(job_id)


def test_array_job_has_one_state_dir(slurm: SlurmCluster) -> None:
    job_id = slurm.sbatch("--hold", "--array=1-3", "--wrap", "echo task $SLURM_ARRAY_TASK_ID")
    try:
        job_dir = slurm.wait_job_dir(job_id)
        assert job_dir.name == f"job.{job_id}"
        assert (job_dir / "script").read_bytes().endswith(b"echo task $SLURM_ARRAY_TASK_ID\n\0")
        assert slurm.job_dir(f"{job_id}_2") == job_dir
    finally:
        slurm.scancel(job_id)


def test_job_dir_helper_matches_slurm_layout(slurm: SlurmCluster, tmp_path: Path) -> None:
    job_id = slurm.sbatch("--wrap", "echo hi", "--output", str(tmp_path / "out.txt"))
    job_dir = slurm.wait_job_dir(job_id)
    assert (job_dir / "script").read_bytes().endswith(b"echo hi\n\0")
