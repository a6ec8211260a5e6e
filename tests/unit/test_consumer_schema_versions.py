"""Consumers during a schema upgrade: the shared runner reads every shipped version from one
topic, and a runner that does not ship the newest dead-letters it as unknown-schema and goes
on (on the scripted clients of tests/unit/conftest.py: runner_harness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.common.dlq import HEADER_REASON, HEADER_SOURCE_OFFSET
from runtime.exits import EXIT_OK
from schemas.codec import JobEventCodec, load_schema_versions
from schemas.model import OwnerSource
from testkit.events import job_event

VERSIONS = load_schema_versions()
P0 = ("jobs", 0)
MakeHarness = Callable[..., Any]


def test_one_topic_holding_every_version_is_stored_whole_with_spool_files_byte_for_byte(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    events = {version: job_event(job_id=str(version), owner="alice",
                                 owner_source=OwnerSource.SCHEDULER) for version in VERSIONS}
    harness.consumer.deliver(P0, *(JobEventCodec(write_version=version).encode(event)
                                   for version, event in events.items()))
    assert harness.runner.run() == EXIT_OK
    stored = {e.job_id: e for batch in harness.sink.stored for e in batch}
    assert sorted(stored) == [str(v) for v in VERSIONS]
    for version, event in events.items():
        assert stored[str(version)].spool_files == event.spool_files, version
    assert stored["1"].owner_source is OwnerSource.UNKNOWN  # v1 has no owner
    assert harness.dead_letters.acknowledged == []


def test_a_consumer_not_shipping_the_newest_version_dead_letters_it_and_goes_on(
        runner_harness: MakeHarness) -> None:
    """Why consumers are upgraded first: a version 3 event reaching an old consumer is
    dead-lettered with reason unknown-schema, committed past, and the consumer keeps going."""
    harness = runner_harness()
    harness.runner.codec = JobEventCodec({v: s for v, s in VERSIONS.items() if v < 3})
    newest = JobEventCodec().encode(job_event(job_id="3"))
    harness.consumer.deliver(P0, JobEventCodec(write_version=2).encode(job_event(job_id="2")),
                             newest)
    assert harness.runner.run() == EXIT_OK
    assert [e.job_id for batch in harness.sink.stored for e in batch] == ["2"]
    assert [(m.headers[HEADER_REASON], m.headers[HEADER_SOURCE_OFFSET], m.value)
            for m in harness.dead_letters.acknowledged] == [(b"unknown-schema", b"1", newest)]
    assert "commit {('jobs', 0): 2}" in harness.journal
