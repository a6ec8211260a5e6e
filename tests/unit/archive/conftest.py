"""Helpers for the archive consumer's unit tests."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.model import JobEvent, Scheduler, SpoolFile, UserSource, make_job_key

# 2024-03-15 23:30:00 UTC: late enough in the day that a local time zone east of UTC
# would already say the 16th.
SUBMIT_MS = int(datetime(2024, 3, 15, 23, 30, tzinfo=UTC).timestamp() * 1000)


def slurm_environment_file(*entries: bytes) -> bytes:
    """Slurm's spool environment file: a native 4-byte count, then NUL-terminated entries."""
    return struct.pack("=I", len(entries)) + b"".join(e + b"\0" for e in entries)


def job_event(**overrides: Any) -> JobEvent:
    """A Slurm job event; keyword arguments replace fields (job_key follows unless given)."""
    script = overrides.pop("script", b"#!/bin/bash\n#SBATCH --job-name=myjob\nsrun hostname\n")
    base = JobEvent(
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
        environment=b"HOME=/home/alice\0USER=alice\0",
        producer_host="head1",
        producer_version="0.1.0",
        spool_files=(
            SpoolFile("script", script + b"\0"),
            SpoolFile("environment",
                      slurm_environment_file(b"HOME=/home/alice", b"USER=alice")),
        ),
        user="alice",
        user_source=UserSource.USER,
        job_name="myjob",
        directives={"job-name": "myjob"},
    )
    event = dataclasses.replace(base, **overrides)
    if "job_key" not in overrides:
        event = dataclasses.replace(event, job_key=make_job_key(
            event.cluster, event.scheduler, event.job_id, event.submit_time))
    return event


def torque_event(**overrides: Any) -> JobEvent:
    script = b"#!/bin/sh\n#PBS -N arr\necho $PBS_ARRAYID\n"
    defaults: dict[str, Any] = {
        "scheduler": Scheduler.TORQUE,
        "job_id": "2[].master",
        "script": script,
        "environment": b"",
        "spool_files": (
            SpoolFile("2[].master.SC", script),
            SpoolFile("2[].master.TA", b"task array"),
            SpoolFile("2-1.master.JB", b"job 1 binary record"),
        ),
        "job_name": "arr",
    }
    return job_event(**{**defaults, **overrides})


@pytest.fixture
def make_event() -> Callable[..., JobEvent]:
    return job_event


@pytest.fixture
def make_torque_event() -> Callable[..., JobEvent]:
    return torque_event
