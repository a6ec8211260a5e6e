"""The local Grid Engine cell spools classically: qsub leaves the script and the job record as
plain files where the producer will watch for them, and qdel removes both."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from testkit.waiting import wait_until

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.conftest import GridEngineCell

# A packed CULL buffer starts with a zero pad and the CULL version.
CULL_HEADER = bytes.fromhex("00000000" "10020000")


def test_qsub_spools_the_script_verbatim_and_the_record_qdel_removes_both(
    gridengine: GridEngineCell,
) -> None:
    script = b"#!/bin/sh\n#$ -N cell_check\necho \xff not utf-8\n"
    job_id = gridengine.qsub("-h", script=script)  # held: it stays pending, its files in place
    record = gridengine.record_path(job_id)
    script_file = gridengine.script_path(job_id)
    try:
        wait_until(lambda: record.is_file() and script_file.is_file(), 30,
                   f"job {job_id}'s record and script are spooled")
        assert script_file.read_bytes() == script
        data = record.read_bytes()
        assert data.startswith(CULL_HEADER)
        assert b"cell_check\0" in data
        assert stat.S_IMODE(record.stat().st_mode) == 0o644
    finally:
        gridengine.qdel(job_id)
    wait_until(lambda: not record.exists() and not script_file.exists(), 30,
               f"qdel removed job {job_id}'s record and script")
