"""A topic holding events of every shipped schema version (as during an upgrade): sarchive-es
indexes each as the document of what its version carried, and dead-letters none."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from consumers.elastic.documents import build_document
from schemas.codec import JobEventCodec, load_schema_versions
from schemas.model import JobEvent, OwnerSource

PER_VERSION = 10


def test_events_of_every_schema_version_become_their_documents(
        pipeline: Any, job_events: Callable[..., list[JobEvent]]) -> None:
    versions = sorted(load_schema_versions())
    events = [dataclasses.replace(e, owner=e.user, owner_source=OwnerSource.SCHEDULER)
              for e in job_events(PER_VERSION * len(versions))]
    expected = {}
    for index, version in enumerate(versions):
        codec = JobEventCodec(write_version=version)
        batch = events[index * PER_VERSION:(index + 1) * PER_VERSION]
        pipeline.produce(batch, codec)
        # What the version carried: version 1 has no owner.
        expected.update({e.job_key: build_document(codec.decode(codec.encode(e)))
                         for e in batch})
    for document in expected.values():
        del document["environment_text"]  # indexed, but left out of _source by the template
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(len(events), timeout=90, consumer=consumer)
    pipeline.es.indices.refresh(index=pipeline.prefix)
    hits = pipeline.es.search(index=pipeline.prefix, query={"match_all": {}},
                              size=len(events))["hits"]["hits"]
    indexed = {hit["_id"]: hit["_source"] for hit in hits}
    assert indexed.keys() == expected.keys()
    for job_key, document in expected.items():
        assert indexed[job_key] == document, job_key
    assert {indexed[e.job_key]["owner_source"] for e in events[:PER_VERSION]} == {"UNKNOWN"}
    assert {indexed[e.job_key]["owner_source"] for e in events[PER_VERSION:]} == {"SCHEDULER"}
    assert consumer.stop() == 0
