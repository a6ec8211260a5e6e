"""sarchive-es against the real broker and node: every job becomes one searchable document,
and a replay of the whole topic changes none of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from elasticsearch import Elasticsearch

from consumers.elastic.documents import build_document
from consumers.elastic.template import DEFAULT_SHARDS
from schemas.model import JobEvent

N = 300


def test_n_events_become_n_documents_found_by_user_job_id_script_word_and_time(
    pipeline: Any, job_events: Callable[..., list[JobEvent]]
) -> None:
    events = job_events(N)
    pipeline.produce(events)
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(N, timeout=90, consumer=consumer)

    def ids(keep: Callable[[JobEvent], bool]) -> set[str]:
        return {e.job_id for e in events if keep(e)}

    search = pipeline.search_ids
    assert search({"term": {"user": "bob"}}) == ids(lambda e: e.user == "bob")
    assert search({"term": {"job_id": events[17].job_id}}) == {events[17].job_id}
    # A module name is a word of the script: `module load gromacs/2023.1` finds gromacs.
    assert search({"match": {"script": "gromacs"}}) == ids(lambda e: b"gromacs" in e.script)
    # ... and of the environment: LOADEDMODULES=gcc:openmpi:lammps/2Aug2023 finds lammps.
    assert search({"match": {"environment_text": "lammps"}}) == ids(
        lambda e: b"lammps" in e.environment
    )
    assert search({"term": {"environment.USER": "carol"}}) == ids(lambda e: e.user == "carol")
    assert search({"prefix": {"environment.USER": "car"}}) == ids(
        lambda e: (e.user or "").startswith("car"))
    start, end = events[40].submit_time, events[59].submit_time
    assert search({"range": {"submit_time": {"gte": start, "lte": end}}}) == {
        e.job_id for e in events[40:60]
    }
    assert search(
        {
            "bool": {
                "filter": [
                    {"term": {"user": "alice"}},
                    {"match": {"script": "gromacs"}},
                    {"range": {"submit_time": {"gte": "2024-06-01", "lt": "2024-07-01"}}},
                ]
            }
        }
    ) == ids(
        lambda e: e.user == "alice" and b"gromacs" in e.script and e.submit_datetime.month == 6
    )
    assert consumer.metric("sarchive_es_documents_indexed_total") == N
    assert consumer.stop() == 0


def test_document_source_is_the_job_as_stored_without_derived_search_text(
    pipeline: Any, job_events: Callable[..., list[JobEvent]]
) -> None:
    (event,) = job_events(1)
    pipeline.produce([event])
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(1, timeout=60, consumer=consumer)
    hit = pipeline.es.search(index=pipeline.prefix, query={"match_all": {}})["hits"]["hits"][0]
    assert hit["_id"] == event.job_key
    expected = build_document(event)
    del expected["environment_text"]  # indexed, but left out of _source by the template
    assert hit["_source"] == expected
    assert consumer.stop() == 0


def test_documents_land_in_monthly_indices_of_their_submit_time_made_by_the_template(
    pipeline: Any, es: Elasticsearch, job_events: Callable[..., list[JobEvent]]
) -> None:
    """Each month's index has the template's primary shards (Elasticsearch's default: 1)."""
    events = job_events(N)
    pipeline.produce(events)
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(N, timeout=90, consumer=consumer)
    prefix = pipeline.prefix
    counts = {
        index: int(es.count(index=index)["count"]) for index in es.indices.get_alias(name=prefix)
    }
    may = sum(1 for e in events if e.submit_datetime.month == 5)
    assert counts == {f"{prefix}-2024.05": may, f"{prefix}-2024.06": N - may}
    shards = es.indices.get_settings(index=f"{prefix}-*", name="index.number_of_shards")
    assert {index: int(found["settings"]["index"]["number_of_shards"])
            for index, found in shards.items()} == dict.fromkeys(counts, DEFAULT_SHARDS)
    assert consumer.stop() == 0


def test_replay_of_the_whole_topic_leaves_every_document_untouched(
    pipeline: Any, job_events: Callable[..., list[JobEvent]]
) -> None:
    pipeline.produce(job_events(N))
    first = pipeline.start_consumer(group="first")
    pipeline.wait_for_count(N, timeout=90, consumer=first)
    assert first.stop() == 0
    before = pipeline.versions()
    assert {version for version, _, _ in before.values()} == {1}

    # A new group reads the topic from the start: every event is delivered again.
    replay = pipeline.start_consumer(group="replay")
    replay.wait_for_metric("sarchive_es_documents_duplicate_total", lambda v: v >= N,
                           timeout=90)
    assert replay.metric("sarchive_es_documents_indexed_total") == 0
    assert pipeline.count() == N
    assert pipeline.versions() == before
    assert replay.stop() == 0
