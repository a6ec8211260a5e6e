"""Delivery edge cases and signals, with the real broker and a synthetic spool.

An event the topic refuses as too large stays in the outbox, loudly, and goes through once the
topic allows it; SIGHUP reopens the log file; SIGTERM flushes and exits 0; a second signal
exits at once with the events kept in the outbox.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from schemas.limits import MAX_MESSAGE_BYTES
from testkit.waiting import wait_until

GOOD_ENV = (b"USER=alice", b"HOME=/home/alice")
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1048588
UNREACHABLE_BROKER = "127.0.0.1:9"


def set_topic_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value),
                    incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def incompressible(size: int) -> bytes:
    return os.urandom(size).replace(b"\0", b"\1")


def script(text: str) -> bytes:
    return f"#!/bin/bash\necho {text}\n".encode()


def test_event_too_large_for_the_topic_stays_in_the_outbox_until_the_topic_allows_it(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    set_topic_max_message_bytes(kafka_bootstrap, kafka_topic, BROKER_DEFAULT_MAX_MESSAGE_BYTES)
    big = b"#!/bin/bash\n# " + incompressible(1_500_000) + b"\n"  # an event of 3 MB and more
    synthetic_spool.write_job(901, big, GOOD_ENV)
    synthetic_spool.write_job(902, script("small"), GOOD_ENV)
    producer = producer_runner("--cluster", "synthetic", "--spool", str(synthetic_spool.root),
                               "--state-dir", str(tmp_path / "state"),
                               "--brokers", kafka_bootstrap, "--topic", kafka_topic,
                               "--retry-interval", "1")
    reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
        lambda r: "902" in r.job_ids(), timeout=60)
    producer.wait_for_metric("sarchive_producer_delivery_failures_total", lambda v: v >= 1,
                             labels={"kind": "too-large"})
    producer.wait_for_log("Kafka refused job 901")
    assert "max.message.bytes" in producer.log()
    assert producer.metric("sarchive_producer_outbox_events") == 1, "kept, not dropped"
    assert "901" not in reader.job_ids()

    set_topic_max_message_bytes(kafka_bootstrap, kafka_topic, MAX_MESSAGE_BYTES)
    reader.read_until(lambda r: "901" in r.job_ids(), timeout=60)
    event = next(e for e in reader.events if e.job_id == "901")
    assert event.script == big
    producer.wait_for_metric("sarchive_producer_outbox_events", lambda v: v == 0)


def test_sighup_reopens_the_log_file_and_sigterm_exits_0_after_delivering(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    log_file = tmp_path / "producer.log"
    producer = producer_runner("--cluster", "synthetic", "--spool", str(synthetic_spool.root),
                               "--state-dir", str(tmp_path / "state"),
                               "--brokers", kafka_bootstrap, "--topic", kafka_topic,
                               "--log-file", str(log_file))
    synthetic_spool.write_job(911, script("before"), GOOD_ENV)
    topic_reader(kafka_bootstrap, kafka_topic).read_until(lambda r: "911" in r.job_ids(), 60)
    rotated = log_file.rename(tmp_path / "producer.log.1")  # what logrotate does
    producer.signal(signal.SIGHUP)
    producer.wait_until(log_file.exists, 10, "the producer has reopened its log file")
    synthetic_spool.write_job(912, script("after"), GOOD_ENV)
    topic_reader(kafka_bootstrap, kafka_topic).read_until(lambda r: "912" in r.job_ids(), 60)
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0
    assert "job 911 archived" in rotated.read_text()
    new_log = log_file.read_text()
    assert "log file reopened" in new_log and "job 912 archived" in new_log
    assert "stopped: 0 events stay in the outbox" in new_log


def test_second_signal_exits_at_once_and_the_outbox_keeps_the_events(
        synthetic_spool: Any, tmp_path: Path, producer_runner: Callable[..., Any]) -> None:
    """The broker is unreachable, so the first SIGTERM's flush could only time out."""
    for job_id in range(921, 926):
        synthetic_spool.write_job(job_id, script(str(job_id)), GOOD_ENV)
    args = ("--cluster", "synthetic", "--spool", str(synthetic_spool.root),
            "--state-dir", str(tmp_path / "state"), "--brokers", UNREACHABLE_BROKER,
            "--shutdown-timeout", "60")
    producer = producer_runner(*args)
    producer.wait_for_metric("sarchive_producer_outbox_events", lambda v: v == 5)
    producer.signal(signal.SIGTERM)
    producer.wait_for_log("stopping: finishing")
    started = time.monotonic()
    producer.signal(signal.SIGINT)
    assert producer.wait(10) == 128 + signal.SIGINT
    assert time.monotonic() - started < 5, "the second signal did not exit at once"
    assert "second signal: exiting at once; 5 events stay in the outbox" in producer.log()

    again = producer_runner(*args)
    again.wait_for_log("replaying 5 events")
    again.kill()


def test_torque_spool_jobs_present_at_start_and_written_later_are_delivered(
        kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    """A spool shaped like Torque 6's server_priv/jobs, with its 0-9 subdirectories."""
    fixture = Path(__file__).parents[1] / "fixtures" / "torque" / "server_priv" / "jobs"
    jobs_dir = tmp_path / "jobs"
    shutil.copytree(fixture, jobs_dir)
    producer_runner("--cluster", "synthetic", "--scheduler", "torque", "--torque-subdirs",
                    "--spool", str(jobs_dir), "--state-dir", str(tmp_path / "state"),
                    "--brokers", kafka_bootstrap, "--topic", kafka_topic)
    expected = {"4711.torque01.cluster.example", "4712[].torque01.cluster.example",
                "4713[].torque01.cluster.example", "4714.torque01.cluster.example"}
    reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
        lambda r: len(r.events) >= len(expected), timeout=60)
    assert {e.job_id for e in reader.events} == expected
    (jobs_dir / "5").mkdir()
    (jobs_dir / "5" / "4715.torque01.cluster.example.SC").write_bytes(b"#!/bin/sh\n#PBS -N t\n")
    (jobs_dir / "5" / "4715.torque01.cluster.example.JB").write_bytes(
        (jobs_dir / "4" / "4714.torque01.cluster.example.JB").read_bytes().replace(
            b"4714", b"4715"))
    reader.read_until(lambda r: "4715.torque01.cluster.example" in r.job_ids(), timeout=60)
    assert "4715.torque01.cluster.example" in reader.job_ids()


def test_torque_subdirectories_holding_jobs_are_followed_without_the_setting_with_a_warning(
        kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    """Without --torque-subdirs the job in jobs/4/ would be skipped without a word."""
    fixture = Path(__file__).parents[1] / "fixtures" / "torque" / "server_priv" / "jobs"
    jobs_dir = tmp_path / "jobs"
    shutil.copytree(fixture, jobs_dir)
    producer = producer_runner(
        "--cluster", "synthetic", "--scheduler", "torque", "--spool", str(jobs_dir),
        "--state-dir", str(tmp_path / "state"), "--brokers", kafka_bootstrap,
        "--topic", kafka_topic)
    reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
        lambda r: "4714.torque01.cluster.example" in r.job_ids(), timeout=60)
    assert "4714.torque01.cluster.example" in reader.job_ids()
    producer.wait_for_log("subdirectories 4 but torque-subdirs is not set: following them")


def _children(pid: int) -> set[int]:
    children: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        children.update(int(child) for child in
                        Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_reader_processes_die_with_a_producer_killed_outright(
        synthetic_spool: Any, tmp_path: Path, producer_runner: Callable[..., Any]) -> None:
    """SIGKILL gives the producer no chance to stop its readers: the kernel must."""
    synthetic_spool.write_job(931, script("931"), GOOD_ENV)
    producer = producer_runner("--cluster", "synthetic", "--spool", str(synthetic_spool.root),
                               "--state-dir", str(tmp_path / "state"),
                               "--brokers", UNREACHABLE_BROKER, "--read-workers", "2")
    producer.wait_for_metric("sarchive_producer_outbox_events", lambda v: v == 1)
    readers = {pid for pid in _children(producer.process.pid)
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
    assert readers, "no reader process"
    producer.kill()
    wait_until(lambda: not any(_alive(pid) for pid in readers), 10,
               "the reader processes have died with the producer")
