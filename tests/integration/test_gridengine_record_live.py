"""Job records the local Grid Engine cell writes decode to what `qstat -j ID -xml` says of the
job: the record qmaster writes on submission (with its descriptor) and the one it rewrites
when the job starts (bound to its job list: no descriptor, read with 8.1.9's)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from producer.cull import FREE_ELEM
from producer.gridengine_record import GridEngineJob, parse_job_record
from testkit.gridengine import QstatJob, differences
from testkit.waiting import wait_until

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from pathlib import Path

    from tests.integration.conftest import GridEngineCell

SCRIPT = b"#!/bin/sh\n#$ -N live_record\nsleep 300\n"


def _status(record: Path) -> int:
    """The element status of a record: free (with its descriptor) or bound."""
    data = record.read_bytes() if record.is_file() else b""
    return int(struct.unpack(">I", data[8:12])[0]) if len(data) >= 12 else 0


def _decoded_as_qstat_shows(gridengine: GridEngineCell, job_id: int) -> GridEngineJob:
    job = parse_job_record(gridengine.record_path(job_id).read_bytes(), job_id=str(job_id))
    assert differences(job, QstatJob.parse(gridengine.qstat_xml(job_id))) == {}
    return job


def test_submitted_and_rewritten_records_decode_to_what_qstat_shows(
    gridengine: GridEngineCell,
) -> None:
    job_id = gridengine.qsub("-h", "-v", "A=1,SECRET_TOKEN=x", "-l", "h_rt=0:10:0",
                             script=SCRIPT)
    record = gridengine.record_path(job_id)
    try:
        # Held: the record written on submission, with its descriptor.
        wait_until(record.is_file, 30, f"job {job_id}'s record is spooled")
        assert _status(record) == FREE_ELEM
        submitted = _decoded_as_qstat_shows(gridengine, job_id)
        assert submitted.job_name == "live_record"
        assert submitted.environment[-2:] == ((b"A", b"1"), (b"SECRET_TOKEN", b"x"))
        # Released and started: rewritten as an element bound to qmaster's job list.
        gridengine.qrls(job_id)
        wait_until(lambda: _status(record) not in (0, FREE_ELEM), 60,
                   f"job {job_id} starts and its record is rewritten")
        started = _decoded_as_qstat_shows(gridengine, job_id)
        assert started.environment == submitted.environment
        assert dict(started.hard_resources) == {"h_rt": "600"}
    finally:
        gridengine.qdel(job_id)
