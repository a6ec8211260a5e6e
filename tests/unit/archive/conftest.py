"""Helpers for the archive consumer's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.model import JobEvent, Scheduler, SpoolFile
from testkit.events import job_event


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
