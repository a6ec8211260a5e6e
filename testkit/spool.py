"""A Slurm StateSaveLocation written the way slurmctld 22.05 writes one: hash.<id % 10>/job.<id>/,
`environment` first (a 4-byte host-order entry count, then NUL-terminated KEY=VALUE entries),
`script` second (the script plus one NUL), the job directory 0700."""

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
