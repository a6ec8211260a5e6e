"""The adapter over the official Elasticsearch client: the requests sarchive-es makes,
the client's exceptions translated into ours (consumers.elastic.bulk_outcomes)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import elastic_transport
import elasticsearch

from consumers.common.sink import SinkFatalError, SinkUnavailableError
from consumers.elastic.bulk_outcomes import (
    RESPONSE_FILTER_PATH,
    ItemResults,
    RefusedBulkError,
    RetryableBulkError,
    error_detail,
    item_results,
    request_failure,
)
from consumers.elastic.metrics import ElasticsearchMetrics


class ElasticsearchApi:
    """The requests sarchive-es makes, with client exceptions translated to ours."""

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
            raise self._setup_failure(exc, f"index template {name!r}") from exc

    def add_fields(self, indices: str, properties: dict[str, Any]) -> None:
        """Add fields to the mapping of the open indices matching `indices` (none may)."""
        try:
            self._client.indices.put_mapping(
                index=indices, properties=properties, allow_no_indices=True,
                ignore_unavailable=True, expand_wildcards="open")
        except Exception as exc:  # every failure is classified by _translate
            raise self._setup_failure(
                exc, f"the fields {', '.join(sorted(properties))} on {indices}") from exc

    def _setup_failure(self, exc: Exception, what: str) -> Exception:
        """What a failed start-up request means: retry later, or stop."""
        failure = self._translate(exc)
        if isinstance(failure, RetryableBulkError):
            return SinkUnavailableError(f"{self._where} is unavailable: {failure}")
        if isinstance(failure, RefusedBulkError):
            return SinkFatalError(f"{self._where} refused {what}: {failure.verdict.detail}")
        return failure

    def bulk(self, body: bytes, count: int) -> ItemResults:
        """A SendBulk over the client's bulk API."""
        started = time.monotonic()
        try:
            response = self._client.bulk(
                # The client's NDJSON serializer forwards bytes as they are (its own bulk
                # helpers rely on it); the annotation only names the list-of-dicts form.
                operations=body,  # type: ignore[arg-type]
                filter_path=RESPONSE_FILTER_PATH)
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
                " create_index, indices:admin/mapping/put on the index pattern")
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
