"""The producer service on a Grid Engine spool (real inotify, the real fixtures' records, the
Kafka client scripted): a record the qmaster rewrites, or rewrites and then removes, is the
job already published, never a new detection nor a vanished job."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from inotify_simple import INotify
from prometheus_client import CollectorRegistry

from producer.config import kafka_producer_properties, load_producer_config
from producer.service import ProducerService
from testkit.waiting import wait_until

if TYPE_CHECKING:
    from tests.conftest import SyntheticGridEngineSpool
    from tests.unit.conftest import ScriptedProducer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gridengine"
PLAIN_RECORD = (FIXTURES / "plain" / "record").read_bytes()
PLAIN_ID = 15  # the job the fixture's record holds


class HeldINotify(INotify):  # type: ignore[misc]  # inotify_simple is untyped: INotify is Any
    """Real inotify whose events stay queued in the kernel while `holding`: released, they
    reach the service in one read, as a busy loop meets them."""

    holding = False

    def read(self, timeout: int | None = None) -> list[object]:
        return [] if self.holding else list(super().read(timeout=timeout))


def test_rewritten_and_removed_records_of_published_jobs_are_not_new_jobs(
        tmp_path: Path, gridengine_spool: SyntheticGridEngineSpool,
        scripted_producer: type[ScriptedProducer]) -> None:
    scripted_producer.max_value_bytes = 1 << 20
    spool = gridengine_spool
    spool.write_job(PLAIN_ID, (FIXTURES / "plain" / "script").read_bytes(), PLAIN_RECORD)
    config = load_producer_config(
        ["--cluster", "grid", "--scheduler", "gridengine", "--spool", str(spool.root),
         "--state-dir", str(tmp_path / "state"), "--read-workers", "0"], environ={})
    registry = CollectorRegistry()
    inotify = HeldINotify()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              producer_factory=scripted_producer,
                              inotify_factory=lambda: inotify)

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    thread.start()
    try:
        wait_until(lambda: value("sarchive_producer_jobs_published_total") == 1, 10,
                   "the job is acknowledged")
        for _ in range(3):  # state changes: the qmaster renames a new record over the job's
            spool.write_record(PLAIN_ID, PLAIN_RECORD)
        inotify.holding = True  # its end, rewritten then removed, seen in one batch
        spool.write_record(PLAIN_ID, PLAIN_RECORD)
        spool.record_path(PLAIN_ID).unlink()
        (spool.root / "job_scripts" / str(PLAIN_ID)).unlink()
        inotify.holding = False
        # A job of another id afterwards: once it is published, every event before it was
        # applied.
        array = FIXTURES / "array" / "record"
        shutil.copytree(array, spool.record_path(18))
        shutil.copyfile(FIXTURES / "array" / "script", spool.root / "job_scripts" / "18")
        wait_until(lambda: value("sarchive_producer_jobs_published_total") == 2, 10,
                   "the second job is acknowledged")
    finally:
        service.request_stop()
        thread.join(10)
    assert value("sarchive_producer_jobs_detected_total") == 2
    assert value("sarchive_producer_jobs_failed_total", {"reason": "vanished"}) == 0
    assert value("sarchive_producer_jobs_failed_total", {"reason": "incomplete"}) == 0
    assert len(scripted_producer.made[0].queue) == 0
