"""The Elasticsearch query DSL of each request the CLI makes: pure functions of what was
asked (docs/elasticsearch.md has the mapping they run against)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from query.criteria import EXACT_FIELDS, MODULE_SEPARATORS, Criteria
from query.jobspec import JobSpec
from query.record import METADATA_KEYS
from schemas.model import ESTABLISHED_OWNER_SOURCES

# Newest first; job_key breaks ties (and makes search_after's position unique: _id cannot
# be sorted on without field data).
SORT: list[dict[str, str]] = [{"submit_time": "desc"}, {"job_key": "desc"}]
OLDEST_FIRST: list[dict[str, str]] = [{"submit_time": "asc"}, {"job_key": "asc"}]
# Enough for every job of one id, however often a scheduler reused it on however many clusters.
SHOW_SIZE = 1000
PAGE_SIZE = 1000
# Indexed for search only: never needed back.
_NOT_SHOWN = ["environment_text"]


@dataclass(frozen=True)
class Access:
    """Which jobs a reader may see, as data: every job (administrators), or the jobs whose
    `owner` is `user` as the scheduler knows it (owner_source SCHEDULER or SPOOL_RECORD; the
    `user` field is the submitter's claim and grants nothing, and a job whose owner is unknown
    is nobody's), and every job of `accounts` (account coordinators)."""

    all_jobs: bool = False
    user: str | None = None
    accounts: tuple[str, ...] = ()


def access_filter(access: Access) -> dict[str, Any] | None:
    """The filter clause restricting a query to what access allows; None for every job. A
    reader allowed nothing gets a clause that matches nothing."""
    if access.all_jobs:
        return None
    allowed: list[dict[str, Any]] = []
    if access.user is not None:
        allowed.append({"bool": {"filter": [
            {"term": {"owner": access.user}},
            {"terms": {"owner_source": [s.value for s in ESTABLISHED_OWNER_SOURCES]}}]}})
    if access.accounts:
        allowed.append({"terms": {"account": list(access.accounts)}})
    if not allowed:
        return {"bool": {"must_not": [{"match_all": {}}]}}
    return {"bool": {"minimum_should_match": 1, "should": allowed}}


def _restricted(filters: list[dict[str, Any]], access: Access | None) -> list[dict[str, Any]]:
    clause = None if access is None else access_filter(access)
    return filters if clause is None else [*filters, clause]


def msearch_body(searches: Sequence[dict[str, Any]]) -> bytes:
    """The NDJSON body of one `_msearch` running these search bodies on the request's index:
    an empty header line, then the body, per search; ended by a newline."""
    return b"".join(b"{}\n" + json.dumps(body).encode() + b"\n" for body in searches)


def show_request(spec: JobSpec, access: Access | None = None) -> dict[str, Any]:
    """Every document of the job SPEC names, whole (of those access allows). A job key's
    submit time is a filter too: Elasticsearch's pre-filter phase then skips every monthly
    index's shards but the one whose submit times hold it (1 shard searched instead of all)."""
    if spec.job_key is not None:
        filters: list[dict[str, Any]] = [{"term": {"job_key": spec.job_key}}]
        if spec.submit_time is not None:
            filters.append({"range": {"submit_time": {
                "gte": spec.submit_time, "lte": spec.submit_time, "format": "epoch_millis"}}})
    else:
        filters = [{"term": {"job_id": spec.job_id}}]
        if spec.cluster is not None:
            filters.append({"term": {"cluster": spec.cluster}})
    filters = _restricted(filters, access)
    return {"size": SHOW_SIZE, "query": {"bool": {"filter": filters}}, "sort": SORT,
            "_source": {"excludes": _NOT_SHOWN}, "track_total_hits": False}


def criteria_query(criteria: Criteria, access: Access | None = None) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    for field in EXACT_FIELDS:
        value = getattr(criteria, field)
        if value is not None:
            filters.append({"term": {field: value}})
    if criteria.name is not None:
        filters.append({"wildcard": {"job_name": {"value": criteria.name}}})
    submitted: dict[str, int] = {}
    if criteria.since_ms is not None:
        submitted["gte"] = criteria.since_ms
    if criteria.until_ms is not None:
        submitted["lt"] = criteria.until_ms
    if submitted:
        filters.append({"range": {"submit_time": {**submitted, "format": "epoch_millis"}}})
    if criteria.module is not None:
        filters.append({"bool": {"minimum_should_match": 1, "should": [
            {"term": {"modules": criteria.module}},
            *({"prefix": {"modules": criteria.module + separator}}
              for separator in MODULE_SEPARATORS)]}})
    if criteria.text is not None:
        filters.append({"match": {"script": {"query": criteria.text, "operator": "and"}}})
    for key, value in criteria.env:
        field = f"environment.{key}"
        filters.append({"exists": {"field": field}} if value is None
                       else {"term": {field: value}})
    return {"bool": {"filter": _restricted(filters, access)}}


def search_request(criteria: Criteria, size: int, search_after: list[Any] | None = None,
                   access: Access | None = None, *, oldest_first: bool = False,
                   ) -> dict[str, Any]:
    """One page of matching jobs' metadata, newest first (or oldest first); the next page
    starts after the last hit's sort values (search_after), so paging has no 10,000-hit
    window."""
    body: dict[str, Any] = {"size": size, "query": criteria_query(criteria, access),
                            "sort": OLDEST_FIRST if oldest_first else SORT,
                            "_source": list(METADATA_KEYS), "track_total_hits": False}
    if search_after is not None:
        body["search_after"] = search_after
    return body


def modules_request(criteria: Criteria, after: dict[str, Any] | None = None,
                    access: Access | None = None) -> dict[str, Any]:
    """One page of the modules' job counts: a composite aggregation, paged by after_key, so
    that any number of distinct modules is counted exactly."""
    composite: dict[str, Any] = {"size": PAGE_SIZE,
                                 "sources": [{"module": {"terms": {"field": "modules"}}}]}
    if after is not None:
        composite["after"] = after
    return {"size": 0, "query": criteria_query(criteria, access), "track_total_hits": False,
            "aggs": {"modules": {"composite": composite}}}
