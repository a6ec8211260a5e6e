"""The producer service on a Grid Engine spool (real inotify, the real fixtures' records, the
Kafka client scripted): a record the qmaster rewrites, or rewrites and then removes, is the
job already published, never a new detection nor a vanished job, told cheaply by its script's
second where it can be."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from inotify_simple import INotify
from prometheus_client import CollectorRegistry

from producer.config import kafka_producer_properties, load_producer_config
from producer.environment import FilteredEnvironment
from producer.gridengine_record import GridEngineJob, parse_job_record
from producer.gridengine_spool import RecordWithheld, record_submit_time_ms
from producer.service import ProducerService
from testkit.spool import SyntheticGridEngineSpool
from testkit.waiting import wait_until

if TYPE_CHECKING:
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


def lay_out_fixture(spool: SyntheticGridEngineSpool, case: str, job_id: int) -> None:
    """A fixture job where the qmaster puts it (an array job's record is a directory)."""
    record = FIXTURES / case / "record"
    array = record.is_dir()
    # Renamed into place as the qmaster does (a copy in place can be read half written).
    spool.write_job(job_id, (FIXTURES / case / "script").read_bytes(),
                    (record / "common" if array else record).read_bytes(), array)


@pytest.mark.parametrize("script_second", ["with the record", "later"])
def test_rewritten_and_removed_records_of_published_jobs_are_not_new_jobs(
        tmp_path: Path, gridengine_spool: SyntheticGridEngineSpool,
        scripted_producer: type[ScriptedProducer], monkeypatch: pytest.MonkeyPatch,
        script_second: str) -> None:
    """A script written in the record's second (as the qmaster writes it) tells a rewrite
    from a new job without decoding the record; one written later (a submission straddling
    a second) is told by the record itself."""
    scripted_producer.max_value_bytes = 1 << 20
    spool = gridengine_spool
    script = spool.write_script(PLAIN_ID, (FIXTURES / "plain" / "script").read_bytes())
    submitted_ns = parse_job_record(PLAIN_RECORD).submit_time_ms * 1_000_000
    written_ns = submitted_ns + (300_000_000 if script_second == "with the record" else 10**9)
    os.utime(script, ns=(written_ns, written_ns))
    spool.write_record(PLAIN_ID, PLAIN_RECORD)
    decoded: list[Path] = []

    def counted_submit_time(leaf: Path, name: str) -> int | None:
        decoded.append(leaf / name)
        return record_submit_time_ms(leaf, name)

    monkeypatch.setattr("producer.jobs.record_submit_time_ms", counted_submit_time)
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

    def published(count: int) -> None:
        wait_until(lambda: value("sarchive_producer_jobs_published_total") == count, 10,
                   f"{count} jobs acknowledged")

    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    thread.start()
    try:
        published(1)
        for _ in range(3):  # state changes: the qmaster renames a new record over the job's
            spool.write_record(PLAIN_ID, PLAIN_RECORD)
        # A job of another id afterwards: once it is published, every event before it was
        # applied.
        lay_out_fixture(spool, "array", 18)
        published(2)
        assert bool(decoded) is (script_second == "later")
        inotify.holding = True  # its end, rewritten then removed, seen in one batch
        spool.write_record(PLAIN_ID, PLAIN_RECORD)
        spool.record_path(PLAIN_ID).unlink()
        (spool.root / "job_scripts" / str(PLAIN_ID)).unlink()
        inotify.holding = False
        lay_out_fixture(spool, "array_step", 19)
        published(3)
    finally:
        service.request_stop()
        thread.join(10)
    assert value("sarchive_producer_jobs_detected_total") == 3
    assert value("sarchive_producer_jobs_failed_total", {"reason": "vanished"}) == 0
    assert value("sarchive_producer_jobs_failed_total", {"reason": "incomplete"}) == 0
    assert len(scripted_producer.made[0].queue) == 0


def test_a_job_whose_record_is_withheld_is_counted_and_logged_once_with_the_reason(
        tmp_path: Path, gridengine_spool: SyntheticGridEngineSpool,
        scripted_producer: type[ScriptedProducer], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Its event is published without the record; the outcome reaches the service's counter
    and one WARNING naming the job and why, and a rewrite of its record (a state change, the
    same job) counts nothing more. Masking withholds only a record the decoder does not read
    back as masked, which a real record never is: the masking is made to withhold, so the
    job is read inline (a reader process would not see the replacement)."""
    reason = "the masked record does not decode"

    def withheld(record: bytes, job: GridEngineJob, environment: FilteredEnvironment
                 ) -> bytes | RecordWithheld:
        return RecordWithheld(reason) if job.job_id == PLAIN_ID else record

    monkeypatch.setattr("producer.events.render_record", withheld)
    scripted_producer.max_value_bytes = 1 << 20
    spool = gridengine_spool
    spool.write_job(PLAIN_ID, (FIXTURES / "plain" / "script").read_bytes(), PLAIN_RECORD)
    config = load_producer_config(
        ["--cluster", "grid", "--scheduler", "gridengine", "--spool", str(spool.root),
         "--state-dir", str(tmp_path / "state"), "--read-workers", "0"],
        environ={})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, kafka_producer_properties(config),
                              producer_factory=scripted_producer)

    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    def published(count: int) -> None:
        wait_until(lambda: value("sarchive_producer_jobs_published_total") == count, 10,
                   f"{count} jobs acknowledged")

    assert value("sarchive_producer_records_withheld_total") == 0
    thread = threading.Thread(target=service.run, kwargs={"install_signals": False})
    thread.start()
    try:
        published(1)
        assert value("sarchive_producer_records_withheld_total") == 1
        spool.write_record(PLAIN_ID, PLAIN_RECORD)
        lay_out_fixture(spool, "array", 18)  # once published, the rewrite was seen before it
        published(2)
    finally:
        service.request_stop()
        thread.join(10)
    assert value("sarchive_producer_records_withheld_total") == 1
    assert [record.getMessage() for record in caplog.records
            if "Grid Engine record" in record.getMessage()] == [
        f"job {PLAIN_ID}: event sent without its Grid Engine record, whose masking could not"
        f" be verified: {reason}"]
