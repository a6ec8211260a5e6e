"""What a consumer service plugs into the shared runner: a durable, idempotent sink."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime.errors import ServiceFatalError
from schemas.model import JobEvent


class SinkUnavailableError(Exception):
    """Retryable: the sink is down, full or slow.

    The runner pauses its partitions, backs off and retries the same batch; nothing is
    committed meanwhile.
    """


class SinkFatalError(ServiceFatalError):
    """Not retryable (bad credentials, misconfiguration): the runner stops with exit code 1
    and commits nothing."""


@dataclass(frozen=True)
class Rejection:
    """One event of a batch the sink refuses for good; it goes to the dead-letter topic.

    index: position of the event in the batch given to write_batch; reason: a short stable
    token (it becomes the sarchive-dlq-reason header and a metric label); detail: free text.
    """

    index: int
    reason: str
    detail: str


class Sink(Protocol):
    name: str
    # Every reason write_batch's rejections may carry that is known in advance, exported at
    # 0 from the start; a sink may give others (Elasticsearch's error types).
    rejection_reasons: tuple[str, ...]

    def prepare(self) -> None:
        """Called once before consuming; may raise SinkFatalError or SinkUnavailableError."""

    def write_batch(self, events: Sequence[JobEvent]) -> Sequence[Rejection]:
        """Store events; return only when every event not rejected is durable.

        Idempotent: the same event may be delivered again after a crash or a rebalance.
        """

    def close(self) -> None:
        """Release resources; called once, after the last write_batch."""
