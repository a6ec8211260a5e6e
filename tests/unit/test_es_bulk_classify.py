"""Bulk outcomes sorted into indexed, duplicate, retry, reject and fatal; chunking; the
writer's retries and halving, driven through its `send` function with Elasticsearch's own
response shapes (no node); and the sink placing refusals at their batch positions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from elasticsearch import Elasticsearch
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumers.common.sink import SinkFatalError, SinkUnavailableError
from consumers.elastic.bulk_outcomes import (
    REASON_TOO_LARGE,
    ItemResults,
    Outcome,
    RefusedBulkError,
    RetryableBulkError,
    Verdict,
    classify_item,
    error_detail,
    item_results,
    request_failure,
)
from consumers.elastic.bulk_writer import BulkSettings, BulkWriter, plan_chunks
from consumers.elastic.documents import BulkItem
from consumers.elastic.elasticsearch_api import ElasticsearchApi
from consumers.elastic.metrics import ElasticsearchMetrics
from consumers.elastic.sink import ElasticsearchSink
from consumers.elastic.template import index_template
from schemas.model import JobEvent
from testkit.events import job_event

MAPPING_ERROR = {
    "type": "document_parsing_exception",
    "reason": "[1:42] failed to parse field [user] of type [long] in document with id 'k'",
    "caused_by": {"type": "illegal_argument_exception",
                  "reason": "For input string: \"alice\""},
}
CONFLICT = {"type": "version_conflict_engine_exception",
            "reason": "[k]: version conflict, document already exists (current version [1])"}
REJECTED_EXECUTION = {"type": "es_rejected_execution_exception", "reason": "queue full"}


def test_created_document_is_indexed() -> None:
    assert classify_item(201, None).outcome is Outcome.INDEXED


def test_conflict_on_create_means_the_document_is_already_there() -> None:
    assert classify_item(409, CONFLICT).outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 507])
def test_overload_and_server_errors_are_retried(status: int) -> None:
    verdict = classify_item(status, REJECTED_EXECUTION)
    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason == "es_rejected_execution_exception"


def test_mapping_error_is_rejected_with_its_type_as_reason_and_the_causes_as_detail() -> None:
    verdict = classify_item(400, MAPPING_ERROR)
    assert verdict.outcome is Outcome.REJECT
    assert verdict.reason == "document_parsing_exception"
    assert "failed to parse field [user]" in verdict.detail
    assert "caused by illegal_argument_exception: For input string" in verdict.detail


def test_too_large_document_is_rejected_as_such() -> None:
    verdict = classify_item(413, None)
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECT, REASON_TOO_LARGE)


def test_unknown_client_error_without_type_is_rejected_under_its_status() -> None:
    verdict = classify_item(422, None)
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECT, "http-422")


@pytest.mark.parametrize("status", [401, 403])
def test_missing_privileges_for_a_document_stop_the_consumer(status: int) -> None:
    verdict = classify_item(status, {"type": "security_exception", "reason": "unauthorized"})
    assert verdict.outcome is Outcome.FATAL
    assert "create_doc" in verdict.detail


def test_write_blocked_index_stops_the_consumer_without_blaming_privileges() -> None:
    verdict = classify_item(403, {"type": "cluster_block_exception",
                                  "reason": "index [x] blocked by: [FORBIDDEN/8/index write]"})
    assert verdict.outcome is Outcome.FATAL
    assert "index write" in verdict.detail
    assert "create_doc" not in verdict.detail


def test_index_that_may_not_be_created_stops_the_consumer_and_says_what_to_allow() -> None:
    verdict = classify_item(404, {"type": "index_not_found_exception", "reason": "no such index"})
    assert verdict.outcome is Outcome.FATAL
    assert "action.auto_create_index" in verdict.detail


def test_error_detail_of_a_non_object_is_its_text() -> None:
    assert error_detail("plain failure") == "plain failure"


@pytest.mark.parametrize(("status", "kind"), [(429, RetryableBulkError),
                                              (503, RetryableBulkError),
                                              (400, RefusedBulkError),
                                              (413, RefusedBulkError),
                                              (404, SinkFatalError),
                                              (405, SinkFatalError)])
def test_whole_request_failure_is_retried_split_or_fatal_by_status(
        status: int, kind: type[Exception]) -> None:
    assert isinstance(request_failure(status, None, "node"), kind)


def test_whole_request_too_large_names_the_node_limit() -> None:
    failure = request_failure(413, None, "node")
    assert isinstance(failure, RefusedBulkError)
    assert failure.verdict.reason == REASON_TOO_LARGE
    assert "http.max_content_length" in failure.verdict.detail


def test_response_without_errors_means_every_item_created() -> None:
    assert item_results({"errors": False, "items": []}, 3) == [(201, None)] * 3


def test_response_with_errors_gives_status_and_error_per_item_in_order() -> None:
    body = {"errors": True, "items": [{"create": {"status": 201}},
                                      {"create": {"status": 409, "error": CONFLICT}}]}
    assert item_results(body, 2) == [(201, None), (409, CONFLICT)]


def test_response_with_a_missing_item_is_retried_rather_than_misattributed() -> None:
    with pytest.raises(RetryableBulkError):
        item_results({"errors": True, "items": [{"create": {"status": 201}}]}, 2)


@given(sizes=st.lists(st.integers(min_value=1, max_value=100), max_size=60),
       max_docs=st.integers(min_value=1, max_value=10),
       max_bytes=st.integers(min_value=1, max_value=300))
def test_chunks_cover_every_item_once_in_order_within_both_bounds(
        sizes: list[int], max_docs: int, max_bytes: int) -> None:
    chunks = plan_chunks(sizes, max_docs, max_bytes)
    assert [p for chunk in chunks for p in chunk] == list(range(len(sizes)))
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_docs
        assert len(chunk) == 1 or sum(sizes[p] for p in chunk) <= max_bytes


def test_chunks_are_filled_greedily() -> None:
    assert plan_chunks([4, 4, 4, 4, 9, 1], 3, 8) == [range(0, 2), range(2, 4), range(4, 5),
                                                    range(5, 6)]


# -- the writer -----------------------------------------------------------------------------

def _items(count: int) -> list[BulkItem]:
    return [BulkItem("i", f"k{n}", f'{{"create":{{"_id":"k{n}"}}}}\n{{"n":{n}}}\n'.encode())
            for n in range(count)]


def _ids(body: bytes) -> list[str]:
    return [line.split(b'"_id":"')[1].split(b'"')[0].decode()
            for line in body.split(b"\n") if b'"_id"' in line]


class Script:
    """A SendBulk that answers each request with the next scripted reply, recording the
    documents each request carried."""

    def __init__(self, *replies: Callable[[list[str]], ItemResults]) -> None:
        self.replies = list(replies)
        self.requests: list[list[str]] = []

    def __call__(self, body: bytes, count: int) -> ItemResults:
        ids = _ids(body)
        assert len(ids) == count
        self.requests.append(ids)
        return self.replies.pop(0)(ids)


def created(ids: list[str]) -> ItemResults:
    return [(201, None)] * len(ids)


def fail_with(error: Exception) -> Callable[[list[str]], ItemResults]:
    def reply(ids: list[str]) -> ItemResults:
        raise error
    return reply


def writer(send: Script, registry: CollectorRegistry, *, max_docs: int = 100,
           max_retries: int = 3) -> tuple[BulkWriter, list[float]]:
    sleeps: list[float] = []
    return BulkWriter(send, BulkSettings(max_docs=max_docs, max_bytes=10**6,
                                         max_retries=max_retries, backoff_initial=0.5,
                                         backoff_max=2.0),
                      ElasticsearchMetrics(registry), where="test node",
                      sleep=sleeps.append), sleeps


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_items_answered_429_are_resent_alone_after_a_back_off() -> None:
    registry = CollectorRegistry()
    send = Script(lambda ids: [(201, None), (429, REJECTED_EXECUTION), (409, CONFLICT)],
                  created)
    bulk, sleeps = writer(send, registry)
    assert bulk.write(_items(3)) == {}
    assert send.requests == [["k0", "k1", "k2"], ["k1"]]
    assert sleeps == [0.5]
    assert sample(registry, "sarchive_es_documents_indexed_total") == 2
    assert sample(registry, "sarchive_es_documents_duplicate_total") == 1
    assert sample(registry, "sarchive_es_retries_total", cause="item") == 1


def test_rejected_item_is_reported_by_position_and_counted_by_reason() -> None:
    registry = CollectorRegistry()
    send = Script(lambda ids: [(201, None), (400, MAPPING_ERROR)])
    bulk, _ = writer(send, registry)
    refused = bulk.write(_items(2))
    assert list(refused) == [1]
    assert refused[1].reason == "document_parsing_exception"
    assert sample(registry, "sarchive_es_rejections_total",
                  reason="document_parsing_exception") == 1


def test_connection_failures_back_off_exponentially_then_the_sink_is_unavailable() -> None:
    down = fail_with(RetryableBulkError("connection", "refused"))
    send = Script(down, down, down, down)
    bulk, sleeps = writer(send, CollectorRegistry(), max_retries=3)
    with pytest.raises(SinkUnavailableError, match="after 3 retries: refused"):
        bulk.write(_items(2))
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(send.requests) == 4


def test_request_succeeding_after_a_timeout_completes_the_write() -> None:
    send = Script(fail_with(RetryableBulkError("timeout", "slow")), created)
    bulk, sleeps = writer(send, CollectorRegistry())
    assert bulk.write(_items(2)) == {}
    assert sleeps == [0.5]


def test_refused_request_is_halved_until_the_bad_document_stands_alone() -> None:
    too_large = RefusedBulkError(Verdict(Outcome.REJECT, REASON_TOO_LARGE, "too large"))

    def refuse_k2(ids: list[str]) -> ItemResults:
        if "k2" in ids:
            raise too_large
        return created(ids)

    send = Script(*[refuse_k2] * 10)
    bulk, _ = writer(send, CollectorRegistry())
    refused = bulk.write(_items(4))
    assert list(refused) == [2]
    assert refused[2].reason == REASON_TOO_LARGE
    assert send.requests == [["k0", "k1", "k2", "k3"], ["k0", "k1"], ["k2", "k3"], ["k2"],
                             ["k3"]]


def test_item_the_user_may_not_write_stops_the_consumer() -> None:
    send = Script(lambda ids: [(403, {"type": "security_exception", "reason": "denied"})])
    bulk, _ = writer(send, CollectorRegistry())
    with pytest.raises(SinkFatalError, match="test node"):
        bulk.write(_items(1))


def test_items_go_out_in_requests_of_at_most_max_docs() -> None:
    send = Script(created, created, created)
    bulk, _ = writer(send, CollectorRegistry(), max_docs=2)
    bulk.write(_items(5))
    assert send.requests == [["k0", "k1"], ["k2", "k3"], ["k4"]]


def test_nothing_to_write_sends_nothing() -> None:
    send = Script()
    bulk, _ = writer(send, CollectorRegistry())
    assert bulk.write([]) == {}
    assert send.requests == []


# -- the sink -------------------------------------------------------------------------------

def test_sink_reports_refusals_of_both_kinds_at_their_positions_in_the_batch() -> None:
    """An event with no possible document and one Elasticsearch refuses, among good ones."""
    registry = CollectorRegistry()
    send = Script(lambda ids: [(201, None), (400, MAPPING_ERROR), (201, None)])
    bulk, _ = writer(send, registry)
    metrics = ElasticsearchMetrics(CollectorRegistry())
    # A real client that is never asked anything: write_batch only goes through `send`.
    api = ElasticsearchApi(Elasticsearch("http://127.0.0.1:9"), metrics, where="test node")
    sink = ElasticsearchSink(api, bulk, "p", index_template("p"), metrics)
    events = [_event(f"key{n}") for n in range(4)]
    events[1] = _event("k" * 600)
    rejections = sink.write_batch(events)
    assert [(r.index, r.reason) for r in rejections] == [
        (1, "job-key-too-long"), (2, "document_parsing_exception")]
    assert send.requests == [["key0", "key2", "key3"]]
    sink.close()


def _event(job_key: str) -> JobEvent:
    return job_event(job_key=job_key)
