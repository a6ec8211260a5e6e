"""The access rules as data become one filter clause added to every query (pure)."""

from __future__ import annotations

import json

from query.criteria import Criteria
from query.es_query import (
    Access,
    access_filter,
    modules_request,
    msearch_body,
    search_request,
    show_request,
)
from query.jobspec import JobSpec

OWNER = Access(user="alice")


def test_administrators_are_not_restricted() -> None:
    assert access_filter(Access(all_jobs=True, user="root")) is None
    assert search_request(Criteria(), 10, access=Access(all_jobs=True)) == search_request(
        Criteria(), 10)


def test_a_user_sees_the_jobs_the_scheduler_says_they_own_never_by_the_user_claim() -> None:
    assert access_filter(OWNER) == {"bool": {"minimum_should_match": 1, "should": [
        {"bool": {"filter": [{"term": {"owner": "alice"}},
                             {"terms": {"owner_source": ["SCHEDULER", "SPOOL_RECORD"]}}]}}]}}


def test_coordinators_also_see_their_accounts() -> None:
    clause = access_filter(Access(user="carol", accounts=("proj1", "proj2")))
    assert clause is not None
    assert {"terms": {"account": ["proj1", "proj2"]}} in clause["bool"]["should"]


def test_a_reader_allowed_nothing_matches_nothing() -> None:
    nothing: dict[str, object] = {"bool": {"must_not": [{"match_all": {}}]}}
    assert access_filter(Access()) == nothing


def test_every_request_carries_the_clause() -> None:
    clause = access_filter(OWNER)
    spec = JobSpec("4711", "4711")
    assert clause in show_request(spec, OWNER)["query"]["bool"]["filter"]
    assert clause in search_request(Criteria(user="bob"), 5, access=OWNER)[
        "query"]["bool"]["filter"]
    assert clause in modules_request(Criteria(), access=OWNER)["query"]["bool"]["filter"]
    assert clause not in show_request(spec)["query"]["bool"]["filter"]


def test_oldest_first_pages_sort_ascending() -> None:
    body = search_request(Criteria(), 1, [5, "k"], oldest_first=True)
    assert body["sort"] == [{"submit_time": "asc"}, {"job_key": "asc"}]
    assert body["search_after"] == [5, "k"]


def test_an_msearch_body_is_one_header_and_one_body_line_per_search_each_restricted() -> None:
    bodies = [search_request(Criteria(name="sim"), 1, [5, "k"], access=OWNER),
              search_request(Criteria(name="sim"), 1, [5, "k"], access=OWNER, oldest_first=True)]
    lines = msearch_body(bodies).split(b"\n")
    assert lines[0] == lines[2] == b"{}" and lines[4] == b""
    assert [json.loads(lines[1]), json.loads(lines[3])] == bodies
    assert access_filter(OWNER) in json.loads(lines[3])["query"]["bool"]["filter"]
