"""One factory for job events in tests: a complete, consistent Slurm job by default."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.model import JobEvent, Scheduler, SpoolFile, UserSource, make_job_key

# 2024-03-15 23:30:00 UTC: late enough in the day that a local time zone east of UTC would
# already say the 16th.
SUBMIT_MS = int(datetime(2024, 3, 15, 23, 30, tzinfo=UTC).timestamp() * 1000)
SCRIPT = b"#!/bin/bash\n#SBATCH --job-name=myjob\nsrun hostname\n"
ENVIRONMENT = b"HOME=/home/alice\0USER=alice\0"


def slurm_environment_file(entries: Sequence[bytes]) -> bytes:
    """Slurm's spool environment file: a host-order 4-byte count, then NUL-terminated
    KEY=VALUE entries (slurmctld 22.05)."""
    return struct.pack("=I", len(entries)) + b"".join(e + b"\0" for e in entries)


def job_event(**overrides: Any) -> JobEvent:
    """A Slurm job event as the producer builds it; keyword arguments replace fields.

    Fields derived from others follow the overrides unless given themselves: job_key (from
    cluster, scheduler, job_id and submit_time), script_size and script_sha256 (from script),
    spool_files (the script plus its NUL and Slurm's environment file of `environment`)."""
    script: bytes = overrides.get("script", SCRIPT)
    environment: bytes = overrides.get("environment", ENVIRONMENT)
    entries = [entry for entry in environment.split(b"\0") if entry]
    event = JobEvent(
        cluster="clusterA",
        scheduler=Scheduler.SLURM,
        job_id="4711",
        job_key="",
        submit_time=SUBMIT_MS,
        read_time=SUBMIT_MS + 250,
        script=script,
        script_size=len(script),
        script_sha256=hashlib.sha256(script).hexdigest(),
        script_truncated=False,
        environment=environment,
        producer_host="head1",
        producer_version="0.1.0",
        spool_files=(SpoolFile("script", script + b"\0"),
                     SpoolFile("environment", slurm_environment_file(entries))),
        user="alice",
        user_source=UserSource.USER,
        job_name="myjob",
        directives={"job-name": "myjob"},
    )
    event = dataclasses.replace(event, **overrides)
    if "job_key" not in overrides:
        event = dataclasses.replace(event, job_key=make_job_key(
            event.cluster, event.scheduler, event.job_id, event.submit_time))
    return event
