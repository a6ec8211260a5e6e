"""Released job event schemas stay readable: pinned fingerprints, golden messages, resolution."""

from __future__ import annotations

import io
from itertools import combinations
from pathlib import Path

import fastavro
import pytest

from schemas import JobEventCodec, UnknownSchemaError, load_schema_versions
from schemas.codec import HEADER_SIZE
from schemas.model import OwnerSource, Scheduler, SpoolFile

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "events"
VERSIONS = load_schema_versions()

# A released schema is never edited: a changed file changes its fingerprint, and every message
# already written with it would become undecodable. Add job_event.vN.avsc instead.
RELEASED_FINGERPRINTS = {
    1: "f49a5ff8641e6d26",
    2: "68ce99fbd6c563d8",
    3: "2da69d0d59fa34b0",
}
# Every (older, newer) pair of shipped versions, checked in both directions below.
PAIRS = list(combinations(sorted(VERSIONS), 2))


def test_every_released_version_is_still_shipped_with_its_pinned_fingerprint() -> None:
    shipped = {v: s.fingerprint.hex() for v, s in VERSIONS.items()}
    assert {v: shipped.get(v) for v in RELEASED_FINGERPRINTS} == RELEASED_FINGERPRINTS


def test_every_shipped_version_is_pinned_once_released() -> None:
    """A new version file must be pinned here when it is released."""
    assert set(VERSIONS) == set(RELEASED_FINGERPRINTS)


@pytest.mark.parametrize("version", sorted(RELEASED_FINGERPRINTS))
def test_golden_message_of_each_released_version_decodes_with_the_current_reader(
        version: int) -> None:
    """Backward compatibility: a message written by version N is read by the newest reader."""
    data = (GOLDEN / f"job_event.v{version}.bin").read_bytes()
    event = JobEventCodec().decode(data)
    assert event.job_id == "4711"
    assert event.script == b"#!/bin/bash\r\n#SBATCH -J caf\xc3\xa9\r\necho \xff\r\n"
    assert event.environment == b"A=1=2\0B=x\ny\0"


@pytest.mark.parametrize(("previous", "current"), PAIRS)
def test_newer_writer_is_readable_by_the_previous_reader(previous: int, current: int) -> None:
    """Forward compatibility: an older reader schema resolves a newer writer's message."""
    data = (GOLDEN / f"job_event.v{current}.bin").read_bytes()
    record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]),
                                        VERSIONS[current].parsed, VERSIONS[previous].parsed)
    assert isinstance(record, dict)
    assert record["job_id"] == "4711"


@pytest.mark.parametrize(("previous", "current"), PAIRS)
def test_previous_writer_is_readable_by_the_newer_reader(previous: int, current: int) -> None:
    """Backward compatibility pair by pair: the newer reader resolves the older writer."""
    data = (GOLDEN / f"job_event.v{previous}.bin").read_bytes()
    record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]),
                                        VERSIONS[previous].parsed, VERSIONS[current].parsed)
    assert isinstance(record, dict)
    assert record["job_id"] == "4711"


def test_version_1_event_reads_as_owner_unknown_and_keeps_its_user_claim() -> None:
    event = JobEventCodec().decode((GOLDEN / "job_event.v1.bin").read_bytes())
    assert (event.owner, event.owner_uid, event.owner_source) == (None, None,
                                                                  OwnerSource.UNKNOWN)


def test_version_2_event_carries_the_scheduler_owner_apart_from_the_user_claim() -> None:
    event = JobEventCodec().decode((GOLDEN / "job_event.v2.bin").read_bytes())
    assert (event.owner, event.owner_uid, event.owner_source) == ("alice", 1000,
                                                                  OwnerSource.SCHEDULER)
    assert event.user == "bob"


def test_a_consumer_shipping_only_version_1_refuses_a_version_2_event_as_unknown_schema() -> None:
    """Why consumers are upgraded first: an old consumer dead-letters v2 as unknown-schema."""
    old_consumer = JobEventCodec({1: VERSIONS[1]})
    with pytest.raises(UnknownSchemaError) as raised:
        old_consumer.decode((GOLDEN / "job_event.v2.bin").read_bytes())
    assert raised.value.reason == "unknown-schema"


def test_a_consumer_shipping_versions_1_and_2_refuses_a_version_3_event_as_unknown_schema() -> None:
    """An old consumer dead-letters v3 as unknown-schema rather than resolve it (it would
    read the rebuilt spool files as empty)."""
    old_consumer = JobEventCodec({1: VERSIONS[1], 2: VERSIONS[2]})
    with pytest.raises(UnknownSchemaError) as raised:
        old_consumer.decode((GOLDEN / "job_event.v3.bin").read_bytes())
    assert raised.value.reason == "unknown-schema"


@pytest.mark.parametrize("version", [1, 2])
def test_spool_files_of_version_1_and_2_events_decode_as_carried(version: int) -> None:
    event = JobEventCodec().decode((GOLDEN / f"job_event.v{version}.bin").read_bytes())
    assert event.spool_files == (SpoolFile("script", event.script + b"\0"),)


def test_version_3_event_rebuilds_its_spool_files_byte_for_byte() -> None:
    data = (GOLDEN / "job_event.v3.bin").read_bytes()
    event = JobEventCodec().decode(data)
    assert event.spool_files == (
        SpoolFile("script", event.script + b"\0"),
        SpoolFile("environment", b"\x02\x00\x00\x00" + event.environment),
        SpoolFile("extra", b"carried as stored"),
    )
    assert (data.count(event.script), data.count(event.environment)) == (1, 1)


def test_version_3_knows_the_gridengine_scheduler_and_older_versions_do_not() -> None:
    symbols = {v: s.parsed["fields"][1]["type"]["symbols"] for v, s in VERSIONS.items()}
    assert [Scheduler(s) for s in symbols[3]] == list(Scheduler)
    assert Scheduler.GRIDENGINE.value not in symbols[1] + symbols[2]
