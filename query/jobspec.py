"""What `sarchive show JOB` was asked for: a pure parse of the JOB argument."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.model import Scheduler

# Slurm ids are numbers; Torque's look like 123.server or 123[].server.
_JOB_ID = r"[0-9A-Za-z][0-9A-Za-z._\[\]-]*"
_KEY = re.compile(rf"^(?P<cluster>[^:]+):(?P<scheduler>{'|'.join(s.value for s in Scheduler)})"
                  rf":(?P<job_id>{_JOB_ID}):(?P<submit>[0-9]+)$")
# Slurm's 4711_7 and Grid Engine's 4711.7 (JOB_ID.TASK_ID); a Torque id has a server name
# after its dot, never a number alone.
_ARRAY_TASK = re.compile(r"^(?P<array>[0-9]+)[_.](?P<task>[0-9]+)$")
_HET_COMPONENT = re.compile(r"^(?P<leader>[0-9]+)\+(?P<offset>[0-9]+)$")
# Torque's task 7 of array 4711, as qstat -t names it: 4711[7].server. The producer archives
# the array once, as 4711[].server (whichever of Torque's spellings its files had).
_TORQUE_TASK = re.compile(r"^(?P<number>[0-9]+)\[(?P<task>[0-9]+)\](?P<server>\.[0-9A-Za-z._-]+)?$")
_PLAIN = re.compile(rf"^{_JOB_ID}$")


class JobSpecError(ValueError):
    """JOB is none of the accepted forms: a usage error."""


@dataclass(frozen=True)
class JobSpec:
    """The archived job id to look for, and what narrows it down."""

    text: str  # as given, for messages
    job_id: str
    cluster: str | None = None
    job_key: str | None = None
    submit_time: int | None = None  # ms, of a job key


def parse_job_spec(text: str) -> JobSpec:
    """4711, 4711_7 or 4711.7 (the array's record: Slurm and Grid Engine keep one script for
    all of an array's tasks, in the array job's spool entry; Torque's 4711[7].server is its
    array 4711[].server), 4711+1 (a heterogeneous job's component: Slurm gives component N
    the id leader+N, and each component its own spool directory), CLUSTER:4711, or a job key
    CLUSTER:SCHEDULER:ID:SUBMIT_MS."""
    key = _KEY.match(text)
    if key is not None:
        return JobSpec(text, key["job_id"], key["cluster"], text, int(key["submit"]))
    cluster: str | None = None
    rest = text
    if ":" in text:
        cluster, _, rest = text.partition(":")
        if not cluster:
            raise JobSpecError(f"{text!r}: empty cluster name before ':'")
    array = _ARRAY_TASK.match(rest)
    if array is not None:
        return JobSpec(text, array["array"], cluster)
    torque_task = _TORQUE_TASK.match(rest)
    if torque_task is not None:
        return JobSpec(text, f"{torque_task['number']}[]{torque_task['server'] or ''}", cluster)
    het = _HET_COMPONENT.match(rest)
    if het is not None:
        return JobSpec(text, str(int(het["leader"]) + int(het["offset"])), cluster)
    if _PLAIN.match(rest):
        return JobSpec(text, rest, cluster)
    raise JobSpecError(f"{text!r} is not a job: give an id (4711), an array task (4711_7,"
                       " Grid Engine's 4711.7, Torque's 4711[7].server), a heterogeneous"
                       " component (4711+1), CLUSTER:ID or a job key")
