"""Bulk `create` requests to Elasticsearch, every outcome classified.

ElasticsearchApi is the thin adapter over the official client (requests, and the client's
exceptions translated to ours); BulkWriter is the delivery logic above it (chunking, bounded
retries, isolating refused documents), which sees only bytes, statuses and error objects.

Every outcome Elasticsearch can give is sorted into exactly one of:
- indexed or duplicate (409 on `create`: the document is already there) -> done;
- retryable (connection refused or reset, timeout, 429, 5xx; per item or for the whole
  request) -> resend with exponential back-off a bounded number of times, then
  SinkUnavailableError so the runner pauses and retries the batch later;
- rejected for good (mapping or parsing errors, document too large, any other per-item 4xx)
  -> a Rejection for the dead-letter topic, with Elasticsearch's error type as the reason;
- fatal (401/403, TLS failures, a server that is not Elasticsearch, a missing index it may
  not create) -> SinkFatalError: no retry can help, an operator must act.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import elastic_transport
import elasticsearch

from consumers.common.sink import SinkFatalError, SinkUnavailableError
from consumers.elastic.documents import BulkItem
from consumers.elastic.metrics import ElasticsearchMetrics
from runtime.backoff import backoff_delays

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REASON_TOO_LARGE = "document-too-large"
# Only the fields classification needs: keeps the response of a 500-document bulk small.
_FILTER_PATH = "errors,items.*.status,items.*.error"


class Outcome(enum.Enum):
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    REJECT = "reject"
    FATAL = "fatal"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""
    detail: str = ""


def error_detail(error: Any) -> str:
    """Elasticsearch's error object as one line: type, reason and the chain of causes."""
    if not isinstance(error, Mapping):
        return str(error)
    parts: list[str] = []
    current: Any = error
    while isinstance(current, Mapping) and len(parts) < 5:
        parts.append(f"{current.get('type', 'error')}: {current.get('reason', '')}".rstrip(": "))
        current = current.get("caused_by")
    return "; caused by ".join(parts)


def classify_item(status: int, error: Any) -> Verdict:  # noqa: PLR0911 -- one return per status class reads plainer than a lookup table
    """One item of a bulk `create` response, by its HTTP status and error object."""
    if 200 <= status < 300:
        return Verdict(Outcome.INDEXED)
    error_type = error.get("type", "") if isinstance(error, Mapping) else ""
    if status == 409:
        return Verdict(Outcome.DUPLICATE)
    detail = error_detail(error)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Verdict(Outcome.RETRY, error_type or f"http-{status}", detail)
    if status in (401, 403):
        # A missing privilege or a write block on the index (cluster_block_exception): the
        # next document would meet the same refusal, so an operator must act.
        hint = ("; the user needs the create_doc and create_index privileges on the index"
                " pattern" if error_type == "security_exception" else "")
        return Verdict(Outcome.FATAL, error_type or f"http-{status}",
                       f"Elasticsearch refused to write the document (HTTP {status}):"
                       f" {detail}{hint}")
    if status == 404:
        # The monthly index does not exist and Elasticsearch would not create it: every
        # later document would fail the same way, so this is a configuration error.
        return Verdict(Outcome.FATAL, error_type or "http-404",
                       f"{detail}; allow action.auto_create_index for the index prefix")
    if status == 413:
        return Verdict(Outcome.REJECT, REASON_TOO_LARGE, detail)
    return Verdict(Outcome.REJECT, error_type or f"http-{status}", detail)


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


class RetryableBulkError(Exception):
    """The whole request failed in a way that may pass later (connection, timeout, 429,
    5xx); cause is a short label for logs and metrics."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


class RefusedBulkError(Exception):
    """The whole request was refused for its content (400, 413); verdict is what a single
    document answered this way gets."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.verdict = verdict


ItemResults = list[tuple[int, Any]]
# One bulk request: NDJSON body and document count in, (status, error) per item out, in
# order; raises RetryableBulkError, RefusedBulkError or SinkFatalError for the whole request.
SendBulk = Callable[[bytes, int], ItemResults]


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


class ElasticsearchApi:
    """The two requests sarchive-es makes, with client exceptions translated to ours."""

    def __init__(self, client: elasticsearch.Elasticsearch, metrics: ElasticsearchMetrics,
                 *, where: str) -> None:
        self._client = client
        self._metrics = metrics
        self._where = where

    def install_template(self, name: str, template: dict[str, Any]) -> None:
        """Put the composable index template: the first request, so it also proves the
        URL, TLS, credentials and privileges before any message is consumed."""
        try:
            self._client.indices.put_index_template(name=name, body=template)
        except Exception as exc:  # every failure is classified by _translate
            failure = self._translate(exc)
            if isinstance(failure, RetryableBulkError):
                raise SinkUnavailableError(f"{self._where} is unavailable: {failure}") from exc
            if isinstance(failure, RefusedBulkError):
                raise SinkFatalError(f"{self._where} refused index template {name!r}:"
                                     f" {failure.verdict.detail}") from exc
            raise failure from exc

    def bulk(self, body: bytes, count: int) -> ItemResults:
        """A SendBulk over the client's bulk API."""
        started = time.monotonic()
        try:
            response = self._client.bulk(
                # The client's NDJSON serializer forwards bytes as they are (its own bulk
                # helpers rely on it); the annotation only names the list-of-dicts form.
                operations=body,  # type: ignore[arg-type]
                filter_path=_FILTER_PATH)
        except Exception as exc:  # every failure is classified by _translate
            self._metrics.bulk_seconds.observe(time.monotonic() - started)
            failure = self._translate(exc)
            self._metrics.bulk_requests.labels(_outcome_label(failure)).inc()
            raise failure from exc
        self._metrics.bulk_seconds.observe(time.monotonic() - started)
        self._metrics.bulk_requests.labels("ok").inc()
        self._metrics.last_success.set_to_current_time()
        return item_results(response.body, count)

    def close(self) -> None:
        self._client.close()

    def _translate(  # noqa: PLR0911 -- one return per kind of failure, in order of precedence
            self, exc: Exception) -> RetryableBulkError | RefusedBulkError | SinkFatalError:
        """What a client exception means for the request: retry it, split it, or stop."""
        if isinstance(exc, elasticsearch.AuthenticationException):
            return SinkFatalError(
                f"{self._where} rejected the credentials (HTTP 401): check --es-user and"
                " --es-password (or --es-password-file), or --es-api-key")
        if isinstance(exc, elasticsearch.AuthorizationException):
            return SinkFatalError(
                f"{self._where} denied the request (HTTP 403): {error_detail(_error_of(exc))};"
                " the user needs manage_index_templates on the cluster and create_doc,"
                " create_index on the index pattern")
        if isinstance(exc, elasticsearch.UnsupportedProductError):
            return SinkFatalError(f"{self._where} is not Elasticsearch: {exc}")
        if isinstance(exc, elastic_transport.TlsError):
            return SinkFatalError(
                f"TLS with {self._where} failed: {exc.message}; check --es-ca-certs and that"
                " the URL names a host its certificate was issued for")
        if isinstance(exc, elastic_transport.ConnectionTimeout):
            return RetryableBulkError("timeout", str(exc.message))
        if isinstance(exc, elastic_transport.ConnectionError):
            return RetryableBulkError("connection", str(exc.message))
        if isinstance(exc, elasticsearch.ApiError):
            return request_failure(exc.meta.status, _error_of(exc), self._where)
        if isinstance(exc, elastic_transport.TransportError):  # e.g. an unreadable response
            return RetryableBulkError("transport", str(exc.message))
        raise exc


def request_failure(status: int, error: Any,
                    where: str) -> RetryableBulkError | RefusedBulkError | SinkFatalError:
    """What an HTTP error status for a whole request means (401/403 are handled before)."""
    detail = error_detail(error)
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableBulkError(f"http-{status}", f"HTTP {status}: {detail}")
    if status == 413:
        return RefusedBulkError(Verdict(
            Outcome.REJECT, REASON_TOO_LARGE,
            f"larger than the node's http.max_content_length: {detail}"))
    if status == 400:
        return RefusedBulkError(classify_item(status, error))
    return SinkFatalError(f"{where} answered HTTP {status}: {detail}")


def item_results(body: Any, count: int) -> ItemResults:
    """(status, error) per item of a bulk response body filtered by _FILTER_PATH."""
    if not body.get("errors"):
        return [(201, None)] * count
    items = body.get("items", [])
    if len(items) != count:
        raise RetryableBulkError("response", f"bulk response has {len(items)} items for"
                                 f" {count} documents")
    results: ItemResults = []
    for item in items:
        (result,) = item.values()
        results.append((int(result.get("status", 500)), result.get("error")))
    return results


def _outcome_label(failure: Exception) -> str:
    if isinstance(failure, RetryableBulkError):
        return "retry"
    if isinstance(failure, RefusedBulkError):
        return "split"
    return "fatal"


def _error_of(exc: elasticsearch.ApiError) -> Any:
    body = exc.body
    if isinstance(body, Mapping) and "error" in body:
        return body["error"]
    return body if body else str(exc.message)
