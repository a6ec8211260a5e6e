"""A forced inotify overflow against real Slurm and Kafka: the rescan finds every job.

The kernel's answer to a full inotify queue is to drop events and queue IN_Q_OVERFLOW. The first
test makes that happen at the adapter boundary, with sbatch: the producer runs in-process with
its inotify wrapped; while the wrapper drops events, sbatch submits jobs the producer can no
longer hear of; then the wrapper queues IN_Q_OVERFLOW exactly as the kernel would. The second
makes the kernel itself overflow a 64-event queue (fs.inotify.max_queued_events is a
machine-wide sysctl, lowered only for the instant the producer creates its instance).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producer.config import kafka_producer_properties, load_producer_config
from producer.service import ProducerService
from testkit.waiting import wait_until


def test_events_lost_to_an_overflow_are_recovered_by_the_rescan(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        slurm: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        scripted_inotify: Any, topic_reader: Callable[..., Any]) -> None:
    config = load_producer_config(
        ["--cluster", slurm.cluster, "--spool", str(slurm.state_dir), "--state-dir",
         str(tmp_path / "state"), "--brokers", kafka_bootstrap, "--topic", kafka_topic],
        environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              inotify_factory=scripted_inotify)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(service.run(install_signals=False)))
    thread.start()
    submitted: list[str] = []
    try:
        wait_until(lambda: registry.get_sample_value(
            "sarchive_producer_rescans_total", {"cause": "start"}) == 1, 30, "the first scan")
        wait_until(lambda: registry.get_sample_value("sarchive_producer_outbox_events") == 0,
                   60, "the catch-up of the shared spool")
        inotify = scripted_inotify()
        inotify.drop_events()
        script = b"#!/bin/sh\n#SBATCH --job-name=overflow\necho lost event\n"
        submitted += [slurm.sbatch("--hold", script=script) for _ in range(40)]
        submitted.append(slurm.sbatch("--hold", "--array=1-10", script=script))
        # Once the kernel holds none of their events, they were read and thrown away: gone
        # for good.
        wait_until(lambda: not inotify.queued(), 30, "the submissions' events are dropped")
        early = topic_reader(kafka_bootstrap, kafka_topic).read_until(lambda r: False,
                                                                        timeout=1)
        assert not set(submitted) & early.job_ids(), "found before the overflow: not lost"

        inotify.overflow()
        reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
            lambda r: set(submitted) <= r.job_ids(), timeout=60)
        missing = set(submitted) - reader.job_ids()
        assert not missing, f"lost to the overflow: {sorted(missing)}"
        assert registry.get_sample_value("sarchive_producer_inotify_overflows_total") == 1
        assert registry.get_sample_value(
            "sarchive_producer_rescans_total", {"cause": "overflow"}) == 1
    finally:
        service.request_stop()
        thread.join(60)
        if submitted:
            slurm.scancel(",".join(submitted))
    assert outcome == [0]


INOTIFY_QUEUE_SYSCTL = Path("/proc/sys/fs/inotify/max_queued_events")
TINY_QUEUE = 64


def test_real_kernel_overflow_of_a_tiny_inotify_queue_loses_no_job(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    """The kernel reads max_queued_events when an inotify instance is created: the sysctl is
    lowered only until the producer has its instance, then restored for everyone else."""
    if not os.access(INOTIFY_QUEUE_SYSCTL, os.W_OK):
        pytest.skip("needs root to set fs.inotify.max_queued_events")
    for n in range(10):  # watched from the start, so every new job directory is an event
        (synthetic_spool.root / f"hash.{n}").mkdir()
    original = INOTIFY_QUEUE_SYSCTL.read_text()
    INOTIFY_QUEUE_SYSCTL.write_text(str(TINY_QUEUE))
    try:
        producer = producer_runner("--cluster", "synthetic", "--spool",
                                   str(synthetic_spool.root), "--state-dir",
                                   str(tmp_path / "state"), "--brokers", kafka_bootstrap,
                                   "--topic", kafka_topic)
        producer.wait_for_log("watching slurm spool")
    finally:
        INOTIFY_QUEUE_SYSCTL.write_text(original)
    job_ids = [str(n) for n in range(1000, 1400)]
    # ~4 events per job, far more than 64, written while the producer cannot read them (it
    # could otherwise keep up with this writer and never overflow).
    producer.signal(signal.SIGSTOP)
    try:
        for job_id in job_ids:
            synthetic_spool.write_job(int(job_id), b"#!/bin/sh\necho %s\n" % job_id.encode())
    finally:
        producer.signal(signal.SIGCONT)
    reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
        lambda r: set(job_ids) <= r.job_ids(), timeout=60)
    assert set(job_ids) <= reader.job_ids()
    assert (producer.metric("sarchive_producer_inotify_overflows_total") or 0) >= 1, \
        "the queue never overflowed: the test proved nothing"
