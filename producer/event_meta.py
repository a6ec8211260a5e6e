"""What the producer keeps about an event beside its encoded bytes: pure data.

The reader builds it with the event; the outbox stores it with the event's bytes; the service
logs, counts and records published jobs by it, without decoding the event.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventMeta:
    """What the service needs about an event without decoding it: logging, metrics, state."""

    job_key: str
    job_id: str
    cluster: str
    submit_time_ms: int
    spool_name: str
