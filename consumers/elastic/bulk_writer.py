"""Delivery of BulkItems in bulk `create` requests: chunking, bounded retries with back-off,
and halving a refused request until the refused document stands alone. It sees only bytes,
statuses and error objects (consumers.elastic.bulk_outcomes classifies them), never the
client: requests go through a SendBulk function (consumers.elastic.elasticsearch_api).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from consumers.common.sink import SinkFatalError, SinkUnavailableError
from consumers.elastic.bulk_outcomes import (
    ItemResults,
    Outcome,
    RefusedBulkError,
    RetryableBulkError,
    Verdict,
    classify_item,
)
from consumers.elastic.documents import BulkItem
from consumers.elastic.metrics import ElasticsearchMetrics
from runtime.backoff import backoff_delays

log = logging.getLogger(__name__)

# One bulk request: NDJSON body and document count in, (status, error) per item out, in
# order; raises RetryableBulkError, RefusedBulkError or SinkFatalError for the whole request.
SendBulk = Callable[[bytes, int], ItemResults]


def plan_chunks(sizes: Sequence[int], max_docs: int, max_bytes: int) -> list[range]:
    """Consecutive positions grouped into bulk requests of at most max_docs documents and
    max_bytes bytes; a document larger than max_bytes is sent on its own."""
    chunks: list[range] = []
    start = 0
    total = 0
    for position, size in enumerate(sizes):
        if position > start and (position - start >= max_docs or total + size > max_bytes):
            chunks.append(range(start, position))
            start, total = position, 0
        total += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


@dataclass(frozen=True)
class BulkSettings:
    max_docs: int
    max_bytes: int
    max_retries: int
    backoff_initial: float = 0.5
    backoff_max: float = 8.0


class BulkWriter:
    """Delivers BulkItems through `send`: chunking, bounded retries with back-off, halving
    refused requests; reports which items were refused for good."""

    def __init__(self, send: SendBulk, settings: BulkSettings, metrics: ElasticsearchMetrics,
                 *, where: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self._send_bulk = send
        self._settings = settings
        self._metrics = metrics
        self._where = where
        self._sleep = sleep

    def write(self, items: Sequence[BulkItem]) -> dict[int, Verdict]:
        """Send all items; return the positions refused for good with their verdict.

        Returns only once every other item is indexed (or was already there); raises
        SinkUnavailableError when retries run out and SinkFatalError when none can help.
        """
        refused: dict[int, Verdict] = {}
        sizes = [len(item.lines) for item in items]
        for chunk in plan_chunks(sizes, self._settings.max_docs, self._settings.max_bytes):
            self._deliver(list(chunk), items, refused)
        return refused

    def _deliver(self, positions: list[int], items: Sequence[BulkItem],
                 refused: dict[int, Verdict]) -> None:
        delays = backoff_delays(self._settings.backoff_initial, self._settings.backoff_max)
        retries = 0
        pending = positions
        while pending:
            try:
                results = self._send_bulk(b"".join(items[p].lines for p in pending),
                                          len(pending))
            except RefusedBulkError as refusal:
                if len(pending) == 1:
                    self._refuse(refused, pending[0], refusal.verdict)
                    return
                # Halve until the refused document stands alone, so that one bad document
                # does not hold back the others.
                middle = len(pending) // 2
                self._deliver(pending[:middle], items, refused)
                self._deliver(pending[middle:], items, refused)
                return
            except RetryableBulkError as failure:
                retries = self._back_off(retries, failure.cause, str(failure), delays)
                continue
            again: list[int] = []
            last_retry = Verdict(Outcome.RETRY)
            for position, (status, error) in zip(pending, results, strict=True):
                verdict = classify_item(status, error)
                if verdict.outcome is Outcome.INDEXED:
                    self._metrics.documents_indexed.inc()
                elif verdict.outcome is Outcome.DUPLICATE:
                    self._metrics.documents_duplicate.inc()
                elif verdict.outcome is Outcome.REJECT:
                    self._refuse(refused, position, verdict)
                elif verdict.outcome is Outcome.RETRY:
                    again.append(position)
                    last_retry = verdict
                else:
                    raise SinkFatalError(f"{self._where}: {verdict.detail}")
            if again:
                retries = self._back_off(
                    retries, "item", f"{len(again)} document(s) not indexed, last:"
                    f" {last_retry.detail}", delays)
            pending = again

    def _refuse(self, refused: dict[int, Verdict], position: int, verdict: Verdict) -> None:
        refused[position] = verdict
        self._metrics.rejections.labels(verdict.reason).inc()

    def _back_off(self, retries: int, cause: str, detail: str,
                  delays: Iterator[float]) -> int:
        if retries >= self._settings.max_retries:
            raise SinkUnavailableError(
                f"{self._where} still failing after {retries} retries: {detail}")
        delay = next(delays)
        log.warning("bulk request failed (%s), retry %d of %d in %.1fs: %s", cause,
                    retries + 1, self._settings.max_retries, delay, detail)
        self._metrics.retries.labels(cause).inc()
        self._sleep(delay)
        return retries + 1
