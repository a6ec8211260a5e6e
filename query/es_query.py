"""The Elasticsearch query DSL of each request the CLI makes: pure functions of what was
asked (docs/elasticsearch.md has the mapping they run against)."""

from __future__ import annotations

from typing import Any

from query.criteria import MODULE_SEPARATORS, Criteria
from query.jobspec import JobSpec
from query.record import METADATA_KEYS

# Newest first; job_key breaks ties (and makes search_after's position unique: _id cannot
# be sorted on without field data).
SORT: list[dict[str, str]] = [{"submit_time": "desc"}, {"job_key": "desc"}]
# Enough for every job of one id, however often a scheduler reused it on however many clusters.
SHOW_SIZE = 1000
PAGE_SIZE = 1000
# Indexed for search only: never needed back.
_NOT_SHOWN = ["environment_text"]


def show_request(spec: JobSpec) -> dict[str, Any]:
    """Every document of the job SPEC names, whole."""
    if spec.job_key is not None:
        filters: list[dict[str, Any]] = [{"term": {"job_key": spec.job_key}}]
    else:
        filters = [{"term": {"job_id": spec.job_id}}]
        if spec.cluster is not None:
            filters.append({"term": {"cluster": spec.cluster}})
    return {"size": SHOW_SIZE, "query": {"bool": {"filter": filters}}, "sort": SORT,
            "_source": {"excludes": _NOT_SHOWN}, "track_total_hits": False}


def criteria_query(criteria: Criteria) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    for field in ("cluster", "user", "account", "partition"):
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
    return {"bool": {"filter": filters}}


def search_request(criteria: Criteria, size: int,
                   search_after: list[Any] | None = None) -> dict[str, Any]:
    """One page of matching jobs' metadata, newest first; the next page starts after the
    last hit's sort values (search_after), so paging has no 10,000-hit window."""
    body: dict[str, Any] = {"size": size, "query": criteria_query(criteria), "sort": SORT,
                            "_source": list(METADATA_KEYS), "track_total_hits": False}
    if search_after is not None:
        body["search_after"] = search_after
    return body


def modules_request(criteria: Criteria, after: dict[str, Any] | None = None,
                    ) -> dict[str, Any]:
    """One page of the modules' job counts: a composite aggregation, paged by after_key, so
    that any number of distinct modules is counted exactly."""
    composite: dict[str, Any] = {"size": PAGE_SIZE,
                                 "sources": [{"module": {"terms": {"field": "modules"}}}]}
    if after is not None:
        composite["after"] = after
    return {"size": 0, "query": criteria_query(criteria), "track_total_hits": False,
            "aggs": {"modules": {"composite": composite}}}
