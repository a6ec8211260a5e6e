"""Every outcome of a bulk `create` request to Elasticsearch, classified: pure functions of
statuses and error objects, apart from the client that makes the requests.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumers.common.sink import SinkFatalError

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REASON_TOO_LARGE = "document-too-large"
# Only the fields classification needs: keeps the response of a 500-document bulk small.
RESPONSE_FILTER_PATH = "errors,items.*.status,items.*.error"


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


# (status, error) per item of a bulk response, in the order of the request.
ItemResults = list[tuple[int, Any]]


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
    """(status, error) per item of a bulk response body filtered by RESPONSE_FILTER_PATH."""
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


