"""How long the producer's loop waits between turns while jobs are due."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from producer.config import kafka_producer_properties, load_producer_config
from producer.jobs import JobRef
from producer.service import ProducerService
from schemas.model import Scheduler


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ProducerService]:
    """A service with its state open, its spool watched and one job due, its loop not
    running."""
    (tmp_path / "spool").mkdir()
    config = load_producer_config(["--cluster", "c", "--spool", str(tmp_path / "spool"),
                                   "--state-dir", str(tmp_path / "state")], environ={})
    service = ProducerService(config, CollectorRegistry(), kafka_producer_properties(config))
    service.state.open()
    service._start_watcher_if_due(time.monotonic())
    job = JobRef(Scheduler.SLURM, "hash.1/job.1", tmp_path / "spool" / "hash.1" / "job.1")
    service.pending.touch(job)
    try:
        yield service
    finally:
        service.watcher.close()
        service.state.close()


def test_a_due_job_no_reader_can_take_lets_the_loop_wait_for_an_answer(
        service: ProducerService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reader holding all the chunks it may: the due job is no reason to turn again
    at once (the loop once spun at full speed until a reader answered)."""
    monkeypatch.setattr(service.readers, "capacity", lambda: 0)
    assert service._wait_timeout(time.monotonic()) > 0.5


def test_a_due_job_a_reader_can_take_is_handed_over_at_once(
        service: ProducerService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.readers, "capacity", lambda: 16)
    assert service._wait_timeout(time.monotonic()) == 0
