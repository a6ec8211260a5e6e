"""Slurm's spool: StateSaveLocation/hash.<id % 10>/job.<id>/{environment,script}.

What slurmctld 22.05 writes at submission (src/slurmctld/job_mgr.c, _copy_job_desc_to_file),
confirmed on a real spool:
- `environment` first: a 4-byte entry count in host byte order (write(fd, &count, 4), NOT
  Slurm's big-endian pack32), then every entry KEY=VALUE followed by one NUL. A value may hold
  '=' and newlines; nothing stops it holding non-UTF-8 bytes.
- `script` second: the script followed by one NUL (strlen + 1 bytes). sbatch refuses scripts
  containing NUL, so the first NUL is the terminator and a script ending in NUL is complete.
One directory per job; a job array keeps one directory, job.<array job id>, for all its tasks.

Reading goes through producer.spool_io (no symlink followed, each file read once); everything
else here is pure.
"""

from __future__ import annotations

import re
from pathlib import Path

from producer.environment import SLURM_ENV_COUNT
from producer.errors import REASON_MALFORMED, REASON_NOT_A_JOB, JobIncompleteError, SpoolReadError
from producer.spool_io import RawJob, open_spool_dir, read_spool_file
from schemas.model import Scheduler, SpoolFile

SLURM_JOB_DIR = re.compile(r"^job\.(\d+)$")
SLURM_HASH_DIR = re.compile(r"^hash\.(\d)$")
SCRIPT_FILE = "script"
ENVIRONMENT_FILE = "environment"

# No real submission comes near this; a larger count header is garbage, not a slow writer.
MAX_ENVIRONMENT_ENTRIES = 1 << 20


def slurm_job_dir(state_dir: Path, job_id: int) -> Path:
    """Where slurmctld keeps the spool files of a job (or of a whole job array)."""
    return state_dir / f"hash.{job_id % 10}" / f"job.{job_id}"


def parse_environment_file(data: bytes, *, job_id: str = "?") -> list[bytes]:
    """Slurm's environment file -> its entries (KEY=VALUE bytes, without the NULs).

    Raises JobIncompleteError while the file is still shorter than its count header says, and
    SpoolReadError("malformed") for contents no amount of further writing can make valid.
    """
    if len(data) < SLURM_ENV_COUNT.size:
        raise JobIncompleteError(
            job_id, f"environment file has {len(data)} bytes, less than its count header"
        )
    (count,) = SLURM_ENV_COUNT.unpack_from(data)
    if count > MAX_ENVIRONMENT_ENTRIES:
        raise SpoolReadError(
            job_id, REASON_MALFORMED, f"environment count header says {count} entries"
        )
    *entries, tail = data[SLURM_ENV_COUNT.size:].split(b"\0")
    if len(entries) > count or (len(entries) == count and tail):
        raise SpoolReadError(
            job_id,
            REASON_MALFORMED,
            f"environment file holds more than the {count} entries its header announces",
        )
    if len(entries) < count:
        raise JobIncompleteError(
            job_id, f"environment file holds {len(entries)} of {count} entries"
        )
    return entries


def script_complete(data: bytes) -> bool:
    """Slurm terminates the stored script with a NUL, written last."""
    return data.endswith(b"\0")


def read_slurm_job(job_dir: Path) -> RawJob:
    """Read job.<id>/script and job.<id>/environment; the submit time is the script's mtime."""
    match = SLURM_JOB_DIR.match(job_dir.name)
    if match is None:
        raise SpoolReadError(
            job_dir.name, REASON_NOT_A_JOB, f"{job_dir} is not named job.<number>"
        )
    job_id = match.group(1)
    with open_spool_dir(job_dir, job_id) as dir_fd:
        # The script is written after the environment, so a complete script means the
        # environment file was complete before it.
        script = read_spool_file(dir_fd, SCRIPT_FILE, job_id)
        if not script_complete(script.content):
            raise JobIncompleteError(job_id, "script is not NUL-terminated yet")
        environment = read_spool_file(dir_fd, ENVIRONMENT_FILE, job_id)
    entries = parse_environment_file(environment.content, job_id=job_id)
    return RawJob(
        scheduler=Scheduler.SLURM,
        job_id=job_id,
        submit_time_ms=script.mtime_ms,
        files=(
            SpoolFile(SCRIPT_FILE, script.content),
            SpoolFile(ENVIRONMENT_FILE, environment.content),
        ),
        environment_entries=entries,
    )
