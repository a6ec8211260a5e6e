"""Spools written by tests as the schedulers write them. Slurm's StateSaveLocation as slurmctld
22.05 writes one: hash.<id % 10>/job.<id>/, `environment` first (a 4-byte host-order entry
count, then NUL-terminated KEY=VALUE entries), `script` second (the script plus one NUL), the
job directory 0700. Grid Engine's classic qmaster spool as sge_qmaster 8.1 writes it:
job_scripts/<id> in one write, the record renamed into jobs/00/0000/0011."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from testkit.events import slurm_environment_file


class SyntheticSlurmSpool:
    def __init__(self, root: Path) -> None:
        self.root = root

    def job_dir(self, job_id: int) -> Path:
        return self.root / f"hash.{job_id % 10}" / f"job.{job_id}"

    environment_bytes = staticmethod(slurm_environment_file)

    def write_job(self, job_id: int, script: bytes,
                  environment: Sequence[bytes] = (b"USER=alice", b"HOME=/home/alice"),
                  mtime_ns: int | None = None) -> Path:
        """A complete job, written in slurmctld's order."""
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, mode=0o700)
        self.write_file(directory / "environment", self.environment_bytes(environment), 0o600)
        self.write_file(directory / "script", script + b"\0", 0o700)
        if mtime_ns is not None:
            os.utime(directory / "script", ns=(mtime_ns, mtime_ns))
        return directory

    @staticmethod
    def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


class SyntheticGridEngineSpool:
    """A qmaster spool holding whatever record bytes the test gives."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def record_path(self, job_id: int) -> Path:
        digits = f"{job_id:010d}"
        return self.root / "jobs" / digits[:2] / digits[2:6] / digits[6:]

    def write_script(self, job_id: int, script: bytes) -> Path:
        scripts = self.root / "job_scripts"
        scripts.mkdir(parents=True, exist_ok=True)
        SyntheticSlurmSpool.write_file(scripts / str(job_id), script, 0o644)
        return scripts / str(job_id)

    def write_record(self, job_id: int, record: bytes, array: bool = False) -> Path:
        """The record renamed into place (again, for a rewrite); an array job's as `common`
        in the job's directory."""
        path = self.record_path(job_id)
        if array:
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
            path = path / "common"
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        temporary = path.with_name("." + path.name)
        SyntheticSlurmSpool.write_file(temporary, record, 0o644)
        temporary.rename(path)
        return path

    def write_job(self, job_id: int, script: bytes | None, record: bytes,
                  array: bool = False) -> Path:
        """A submission in the qmaster's order: the script (none for a binary job), then
        the record."""
        if script is not None:
            self.write_script(job_id, script)
        return self.write_record(job_id, record, array)
