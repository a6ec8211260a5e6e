"""One job from spool files to encoded event bytes, with every failure as a value.

`read_job` is what the producer's reader processes run (producer.reader_processes); it
touches only the job's own spool files, so it is safe in another process, and its outcome is
plain data that crosses a pipe. What to do with the outcome (outbox, retry, give up) stays in the
service, the only owner of the producer's state.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from enum import Enum

from producer.errors import REASON_IO, REASON_MALFORMED, JobIncompleteError, SpoolReadError
from producer.event_meta import EventMeta
from producer.events import EventSettings, build_job_event
from producer.jobs import JobRef, read_raw_job
from producer.slurm_owners import UNKNOWN_OWNER, JobOwner
from schemas.codec import JobEventCodec
from schemas.model import OwnerSource


@dataclass(frozen=True, slots=True)
class TruncatedScript:
    size: int
    carried: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """The job made an event: its outbox metadata and encoded bytes."""

    meta: EventMeta
    value: bytes
    redacted_values: int
    truncated: TruncatedScript | None
    owner_known: bool  # the scheduler established the job's owner
    record_withheld: str | None  # why the job's Grid Engine record is not in the event


class ReadFailureKind(Enum):
    INCOMPLETE = "incomplete"  # the scheduler is still writing: re-check later
    FAILED = "failed"  # this job cannot make an event: give up on it
    UNEXPECTED = "unexpected"  # a bug or a case no parser anticipated: give up, loudly
    READER_LOST = "reader-lost"  # the reader process died before answering: re-check later


@dataclass(frozen=True, slots=True)
class ReadFailure:
    kind: ReadFailureKind
    reason: str
    detail: str


ReadOutcome = ReadEvent | ReadFailure


def read_job(job: JobRef, settings: EventSettings, codec: JobEventCodec,
             read_time_ms: int, slurm_owner: JobOwner = UNKNOWN_OWNER) -> ReadOutcome:
    """Read, build and encode one job; never raises for anything the job's files hold."""
    try:
        raw = read_raw_job(job)
        built = build_job_event(raw, settings, read_time_ms, slurm_owner)
        event = built.event
        value = codec.encode(event)
    except JobIncompleteError as exc:
        return ReadFailure(ReadFailureKind.INCOMPLETE, exc.reason, exc.detail)
    except SpoolReadError as exc:
        return ReadFailure(ReadFailureKind.FAILED, exc.reason, exc.detail)
    except OSError as exc:
        return ReadFailure(ReadFailureKind.FAILED, REASON_IO, str(exc))
    except Exception:  # a job no parser anticipated must not stop the others
        return ReadFailure(ReadFailureKind.UNEXPECTED, REASON_MALFORMED, traceback.format_exc())
    truncated = (TruncatedScript(event.script_size, len(event.script), event.script_sha256)
                 if event.script_truncated else None)
    return ReadEvent(EventMeta(event.job_key, event.job_id, event.cluster, event.submit_time,
                               job.name),
                     value, len(event.redacted_keys), truncated,
                     event.owner_source is not OwnerSource.UNKNOWN, built.record_withheld)
