"""The job event as a frozen value: what the producer builds and the consumers receive.

Field meanings are documented once, in the .avsc `doc` strings (schemas/avsc/); times are
integers in milliseconds since the Unix epoch (UTC), exactly as carried on the wire.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

REDACTED_MARKER = b"<redacted>"


class Scheduler(enum.StrEnum):
    SLURM = "slurm"
    TORQUE = "torque"
    GRIDENGINE = "gridengine"  # from schema version 3


class UserSource(enum.StrEnum):
    USER = "USER"
    LOGNAME = "LOGNAME"
    WORKDIR = "WORKDIR"
    SPOOL = "SPOOL"
    UNKNOWN = "UNKNOWN"


class OwnerSource(enum.StrEnum):
    """Where JobEvent.owner came from; only SCHEDULER and SPOOL_RECORD establish an owner."""

    UNKNOWN = "UNKNOWN"
    SCHEDULER = "SCHEDULER"
    SPOOL_RECORD = "SPOOL_RECORD"


# The owner sources access control believes: both are the scheduler's, not the submitter's.
ESTABLISHED_OWNER_SOURCES = (OwnerSource.SCHEDULER, OwnerSource.SPOOL_RECORD)


@dataclass(frozen=True, slots=True)
class SpoolFile:
    name: str
    content: bytes


def _empty_directives() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class JobEvent:
    cluster: str
    scheduler: Scheduler
    job_id: str
    job_key: str
    submit_time: int
    read_time: int
    script: bytes
    script_size: int
    script_sha256: str
    script_truncated: bool
    environment: bytes
    producer_host: str
    producer_version: str
    redacted_keys: tuple[str, ...] = ()
    spool_files: tuple[SpoolFile, ...] = ()
    array_job_id: str | None = None
    array_task_id: str | None = None
    user: str | None = None
    user_source: UserSource = UserSource.UNKNOWN
    owner: str | None = None
    owner_uid: int | None = None
    owner_source: OwnerSource = OwnerSource.UNKNOWN
    job_name: str | None = None
    account: str | None = None
    partition: str | None = None
    work_dir: str | None = None
    time_limit: str | None = None
    nodes: str | None = None
    ntasks: str | None = None
    directives: Mapping[str, str] = field(default_factory=_empty_directives)

    @property
    def submit_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.submit_time / 1000, tz=UTC)

    def environment_entries(self) -> list[tuple[str, str]]:
        """The environment as (key, value) pairs, decoded leniently for display and search."""
        return parse_environment(self.environment)


def metadata_fields(event: JobEvent) -> dict[str, Any]:
    """Every field of the event but its byte contents (script, environment, spool files), as
    plain values under their schema names: the common part of the wire record, the archive's
    metadata sidecar and the Elasticsearch document."""
    return {
        "job_key": event.job_key,
        "cluster": event.cluster,
        "scheduler": event.scheduler.value,
        "job_id": event.job_id,
        "array_job_id": event.array_job_id,
        "array_task_id": event.array_task_id,
        "submit_time": event.submit_time,
        "read_time": event.read_time,
        "user": event.user,
        "user_source": event.user_source.value,
        "owner": event.owner,
        "owner_uid": event.owner_uid,
        "owner_source": event.owner_source.value,
        "job_name": event.job_name,
        "account": event.account,
        "partition": event.partition,
        "work_dir": event.work_dir,
        "time_limit": event.time_limit,
        "nodes": event.nodes,
        "ntasks": event.ntasks,
        "directives": dict(event.directives),
        "script_size": event.script_size,
        "script_sha256": event.script_sha256,
        "script_truncated": event.script_truncated,
        "redacted_keys": list(event.redacted_keys),
        "producer_host": event.producer_host,
        "producer_version": event.producer_version,
    }


def make_job_key(cluster: str, scheduler: Scheduler, job_id: str, submit_time_ms: int) -> str:
    """The deterministic identity of one job: stable across rescans, new when an id is reused."""
    return f"{cluster}:{scheduler.value}:{job_id}:{submit_time_ms}"


def parse_environment(canonical: bytes) -> list[tuple[str, str]]:
    """Split canonical environment bytes (NUL-terminated KEY=VALUE entries) into pairs.

    Bytes that are not UTF-8 are replaced rather than rejected: this view is for people and
    search engines; the exact bytes stay in JobEvent.environment.
    """
    pairs: list[tuple[str, str]] = []
    for entry in canonical.split(b"\0"):
        if not entry:
            continue
        key, _, value = entry.partition(b"=")
        pairs.append(
            (key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        )
    return pairs


def canonical_environment(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The canonical bytes (NUL-terminated KEY=VALUE entries) of decoded pairs: the exact
    bytes again unless decoding replaced any, a key repeated or an entry had no '='."""
    # surrogatepass: a value read back from JSON may hold a lone surrogate, never an error.
    return b"".join(f"{key}={value}".encode("utf-8", "surrogatepass") + b"\0"
                    for key, value in pairs)
