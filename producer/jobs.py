"""One job in the spool as the watcher names it, and how to read it with the parsers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from producer.gridengine_spool import (
    job_id_of,
    read_gridengine_job,
    record_removed,
    record_submit_time_ms,
    script_second_ms,
)
from producer.slurm_spool import SCRIPT_FILE, read_slurm_job
from producer.spool_io import RawJob
from producer.torque_spool import read_torque_job
from schemas.model import Scheduler


@dataclass(frozen=True, slots=True)
class JobRef:
    """A Slurm job directory; a Torque job's base name in the directory holding its files; a
    Grid Engine job's record name ('0011') in the jobs/ directory holding it.

    `name` is the job's path relative to the spool ('hash.1/job.4711', '4711.srv',
    '1/4711.srv' or 'jobs/00/0000/0011'): stable for the job's life, it keys the
    published-jobs state.
    """

    scheduler: Scheduler
    name: str
    directory: Path
    base: str | None = None

    def __hash__(self) -> int:
        # The generated hash would hash the Path too (in Python) on every dict and set
        # operation of the loop; the name alone identifies the job within a spool.
        return hash(self.name)

    @property
    def label(self) -> str:
        """What logs call the job: its id as far as the spool's names tell."""
        if self.scheduler is Scheduler.GRIDENGINE:
            return job_id_of(self.name) or self.name
        if self.base is not None:
            return self.base
        return self.directory.name.removeprefix("job.")

    @property
    def identity_file(self) -> Path:
        """The file written once at submission, whose mtime is the job's submit time and
        tells one submission from a later job that reuses the name (Slurm, Torque)."""
        if self.base is not None:
            return self.directory / f"{self.base}.SC"
        return self.directory / SCRIPT_FILE

    def submit_time_ms(self) -> int | None:
        """The submit time the spool shows now, as the readers compute it; None if it cannot
        be told (yet). Slurm and Torque: the identity file's mtime in ms; Grid Engine: the
        submit time in the job's record, which the qmaster rewrites on every state change."""
        if self.scheduler is Scheduler.GRIDENGINE:
            assert self.base is not None
            return record_submit_time_ms(self.directory, self.base)
        try:
            return os.lstat(self.identity_file).st_mtime_ns // 1_000_000
        except OSError:
            return None

    def probable_submit_time_ms(self) -> int | None:
        """submit_time_ms() where it is cheap; for Grid Engine the second its script was
        written, which is the record's submit time nearly always (a match identifies the
        submission: a job id comes back only after a reinstall, never within a second)."""
        if self.scheduler is Scheduler.GRIDENGINE:
            assert self.base is not None
            return script_second_ms(self.directory, self.base)
        return self.submit_time_ms()

    def removed_from_spool(self) -> bool:
        """Whether a job whose submit time cannot be told is on its way out of the spool, not
        on its way in. Only a Grid Engine record says so (it appears whole, by a rename, so
        its absence is a removal); a Slurm or Torque job's identity file may not be written
        yet."""
        if self.scheduler is Scheduler.GRIDENGINE:
            assert self.base is not None
            return record_removed(self.directory, self.base)
        return False


def read_raw_job(job: JobRef) -> RawJob:
    """Read the job's spool files; raises producer.errors.SpoolReadError subclasses."""
    if job.scheduler is Scheduler.GRIDENGINE:
        assert job.base is not None
        return read_gridengine_job(job.directory, job.base)
    if job.base is not None:
        return read_torque_job(job.directory, job.base)
    return read_slurm_job(job.directory)
