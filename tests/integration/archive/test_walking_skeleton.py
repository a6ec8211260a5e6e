"""The whole pipeline live: jobs submitted with sbatch while sarchive-producer and
sarchive-archive run arrive in the dated archive byte for byte as Slurm stored them."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner
    from tests.integration.conftest import SlurmCluster


MULTILINE_NON_ASCII = (
    "#!/bin/bash\n#SBATCH --job-name=caf\u00e9\n#SBATCH --ntasks=1\n"
    "# \u00e9nergie \u03bb-sweep \u2713\n"
).encode() + b"echo 'latin-1 byte: \xe9'\nsrun hostname\n\n"
ARRAY = b"#!/bin/bash\n#SBATCH --array=0-9\necho task $SLURM_ARRAY_TASK_ID\n"


def test_sbatch_jobs_arrive_in_the_dated_archive_byte_identical_while_services_run(
        slurm: SlurmCluster, producer_runner: Callable[..., Any], archive_runner: ArchiveRunner,
        tmp_path: Path) -> None:
    producer = producer_runner(
        "--cluster", slurm.cluster, "--scheduler", "slurm", "--spool", str(slurm.state_dir),
        "--state-dir", str(tmp_path / "producer-state"), "--brokers", archive_runner.bootstrap,
        "--topic", archive_runner.topic, "--env-redact", "",
        "--env-redact-values", "")
    consumer = archive_runner.start("--period", "daily")
    producer.wait_for_log("watching")
    jobs = [
        slurm.sbatch("--hold", script=MULTILINE_NON_ASCII),
        slurm.sbatch("--hold", "--wrap", "python3 -c 'print(\"wrapped\")'"),
        slurm.sbatch("--hold", script=ARRAY),
    ]
    try:
        stored = {job: (slurm.job_dir(job) / "script").read_bytes() for job in jobs}
        days = {job: time.strftime("%Y%m%d", time.gmtime(
            (slurm.job_dir(job) / "script").stat().st_mtime)) for job in jobs}

        def archived(job: str) -> Path:
            return archive_runner.root / days[job] / f"job.{job}_script"

        archive_runner.wait_until(lambda: all(archived(job).exists() for job in jobs), 60,
                                  "the three jobs in the archive")
        for job in jobs:
            # Slurm's spool copy ends with the NUL slurmctld appends; the archive keeps the
            # script as submitted.
            assert stored[job].endswith(b"\0")
            assert archived(job).read_bytes() == stored[job][:-1]
        assert archived(jobs[0]).read_bytes() == MULTILINE_NON_ASCII
        assert archived(jobs[2]).read_bytes() == ARRAY
        assert b"# This script was created by sbatch --wrap." in archived(jobs[1]).read_bytes()
        for job in jobs:  # with redaction off, the environment file is Slurm's own
            environment = archive_runner.root / days[job] / f"job.{job}_environment"
            assert environment.read_bytes() == (slurm.job_dir(job) / "environment").read_bytes()
    finally:
        slurm.scancel(*jobs)
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0
    assert consumer.stop() == 0
