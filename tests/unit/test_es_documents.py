"""Job events as Elasticsearch documents: monthly index names, fields, exact script bytes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.elastic.documents import (
    MAX_ID_BYTES,
    JobKeyTooLongError,
    SubmitTimeOutOfRangeError,
    build_document,
    bulk_item,
    check_index_prefix,
    index_name,
)
from consumers.elastic.template import MAPPING_PROPERTIES
from query.elastic import environment_entries_of, script_of
from schemas.model import JobEvent, OwnerSource, SpoolFile
from testkit.events import job_event
from tests.unit.conftest import gridengine_event

# Milliseconds of 0001-01-01T00:00:00Z and of the last millisecond of 9999.
FIRST_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
LAST_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000) + 999


def make_event(**changes: object) -> JobEvent:
    script = b"#!/bin/bash\n#SBATCH --time=1:00:00\nmodule load gromacs/2023.1\nsrun gmx_mpi\n"
    submit = 1_718_000_000_000
    return job_event(**{
        "cluster": "hydra", "submit_time": submit, "read_time": submit + 250, "script": script,
        "environment": b"HOME=/home/alice\0TOKEN=<redacted>\0PATH=/bin\0HOME=/scratch/alice\0",
        "producer_host": "master1", "redacted_keys": ("TOKEN",),
        "spool_files": (SpoolFile("script", script), SpoolFile("environment", b"X=1\0")),
        "array_job_id": "4700", "array_task_id": "11", "job_name": "md run",
        "account": "proj1", "partition": "batch", "work_dir": "/home/alice/md",
        "time_limit": "1:00:00", "nodes": "2", "ntasks": "64",
        "directives": {"time": "1:00:00"}, **changes})


def test_index_is_the_utc_month_of_submission_at_both_edges_of_a_month() -> None:
    last_of_january = int(datetime(2024, 1, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
                          * 1000)
    assert index_name("sarchive-jobs", last_of_january) == "sarchive-jobs-2024.01"
    assert index_name("sarchive-jobs", last_of_january + 1) == "sarchive-jobs-2024.02"


def test_submission_before_1970_gets_its_own_month() -> None:
    assert index_name("p", -1) == "p-1969.12"


@given(st.integers(min_value=FIRST_MS, max_value=LAST_MS))
def test_index_name_agrees_with_the_calendar_for_every_representable_millisecond(
        millis: int) -> None:
    when = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=millis)
    assert index_name("p", millis) == f"p-{when.year:04d}.{when.month:02d}"


@pytest.mark.parametrize("millis", [FIRST_MS - 1, LAST_MS + 1, 2**62, -(2**62)])
def test_submit_time_without_a_four_digit_year_is_a_named_error(millis: int) -> None:
    with pytest.raises(SubmitTimeOutOfRangeError) as caught:
        index_name("p", millis)
    assert caught.value.reason == "submit-time-out-of-range"


def test_document_carries_the_searchable_fields_and_times_as_epoch_millis() -> None:
    event = make_event()
    document = build_document(event)
    assert document["job_key"] == event.job_key
    assert document["user"] == "alice"
    assert document["scheduler"] == "slurm"
    assert document["user_source"] == "USER"
    assert (document["owner"], document["owner_uid"], document["owner_source"]) == (
        None, None, "UNKNOWN")
    assert document["submit_time"] == event.submit_time
    assert document["read_time"] == event.read_time
    assert document["directives"] == {"time": "1:00:00"}
    assert document["redacted_keys"] == ["TOKEN"]
    assert "module load gromacs/2023.1" in document["script"]


def test_a_gridengine_document_carries_its_scheduler_owner_and_directives() -> None:
    event = gridengine_event(owner="alice", owner_uid=1000,
                             owner_source=OwnerSource.SPOOL_RECORD,
                             directives={"N": "hello", "l.h_rt": "1:00:00"})
    document = build_document(event)
    assert document["scheduler"] == "gridengine"
    assert (document["owner"], document["owner_uid"], document["owner_source"]) == (
        "alice", 1000, "SPOOL_RECORD")
    assert document["directives"] == {"N": "hello", "l.h_rt": "1:00:00"}
    assert document["environment"] == {"HOME": "/home/alice", "SECRET_TOKEN": "<redacted>"}
    assert bulk_item(event, "sarchive-jobs").doc_id == event.job_key


def test_environment_is_a_map_whose_repeated_key_keeps_its_last_value() -> None:
    document = build_document(make_event())
    assert document["environment"] == {"HOME": "/scratch/alice", "TOKEN": "<redacted>",
                                       "PATH": "/bin"}


def test_environment_text_has_one_line_per_variable_and_list_items_as_words() -> None:
    document = build_document(make_event(
        environment=b"LOADEDMODULES=gcc/12.2:openmpi/4.1:gromacs/2023.1\0HOME=/home/a\0"))
    assert document["environment_text"] == \
        "LOADEDMODULES=gcc/12.2 openmpi/4.1 gromacs/2023.1\nHOME=/home/a"


def test_modules_are_those_of_the_script_and_of_the_submissions_last_loadedmodules() -> None:
    document = build_document(make_event(
        environment=b"LOADEDMODULES=old\0LOADEDMODULES=gcc/12:openmpi/4.1.5-gcc-12\0"))
    assert document["modules"] == ["gcc/12", "gromacs/2023.1", "openmpi/4.1.5-gcc-12"]


def test_a_job_without_modules_has_an_empty_modules_list() -> None:
    document = build_document(make_event(script=b"#!/bin/sh\nml purge\n", environment=b""))
    assert document["modules"] == []


def test_spool_files_are_left_to_the_file_archive() -> None:
    assert "spool_files" not in build_document(make_event())


def test_utf8_script_is_stored_once_as_text() -> None:
    document = build_document(make_event())
    assert "script_b64" not in document
    assert script_of(document) == make_event().script


def test_non_utf8_script_keeps_its_exact_bytes_beside_the_readable_text() -> None:
    script = b"echo caf\xe9\n\xff\xfe"
    document = build_document(make_event(script=script))
    assert document["script"] == "echo caf\ufffd\n\ufffd\ufffd"
    assert base64.b64decode(document["script_b64"]) == script


def test_an_environment_the_map_gives_back_is_stored_once() -> None:
    document = build_document(make_event(environment=b"A=1\0B=x=y\0EMPTY=\0"))
    assert "environment_b64" not in document
    assert environment_entries_of(document) == b"A=1\0B=x=y\0EMPTY=\0"


@pytest.mark.parametrize("environment", [
    b"LANG=caf\xe9\0",  # not UTF-8
    b"A=1\0B=2\0A=3\0",  # a repeated key: the map keeps one value
    b"NOEQUALS\0A=1\0",  # an entry without '='
], ids=["not-utf8", "repeated-key", "no-equals"])
def test_an_environment_the_map_loses_keeps_its_exact_entries(environment: bytes) -> None:
    document = build_document(make_event(environment=environment))
    assert base64.b64decode(document["environment_b64"]) == environment
    assert environment_entries_of(document) == environment


@given(st.lists(st.binary(max_size=40).filter(lambda e: b"\0" not in e and e), max_size=8))
def test_any_environment_comes_back_exactly_from_the_json_document(
        entries: list[bytes]) -> None:
    environment = b"".join(entry + b"\0" for entry in entries)
    lines = bulk_item(make_event(environment=environment), "p").lines
    assert environment_entries_of(json.loads(lines.split(b"\n")[1])) == environment


@given(st.binary(max_size=2048))
def test_any_script_bytes_come_back_exactly_from_the_json_document(script: bytes) -> None:
    lines = bulk_item(make_event(script=script), "p").lines
    document = json.loads(lines.split(b"\n")[1])
    assert script_of(document) == script


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: "=" not in k and "\0" not in k),
                       st.text().filter(lambda v: "\0" not in v), max_size=8))
def test_any_environment_of_text_entries_becomes_the_same_map(entries: dict[str, str]) -> None:
    canonical = b"".join(f"{k}={v}".encode() + b"\0" for k, v in entries.items())
    assert build_document(make_event(environment=canonical))["environment"] == entries


def test_every_document_field_is_in_the_strict_mapping() -> None:
    document = build_document(make_event(script=b"\xff"))
    assert set(document) <= set(MAPPING_PROPERTIES)


def test_bulk_item_is_a_create_action_on_the_monthly_index_with_the_job_key_as_id() -> None:
    event = make_event()
    item = bulk_item(event, "sarchive-jobs")
    action, source, rest = item.lines.split(b"\n")
    assert rest == b""
    assert json.loads(action) == {"create": {"_index": "sarchive-jobs-2024.06",
                                             "_id": event.job_key}}
    assert json.loads(source) == build_document(event)
    assert (item.index, item.doc_id) == ("sarchive-jobs-2024.06", event.job_key)


def test_bulk_lines_are_utf8_not_ascii_escapes() -> None:
    item = bulk_item(make_event(user="jürgen"), "p")
    assert "jürgen".encode() in item.lines


def test_same_event_gives_byte_identical_bulk_lines() -> None:
    """Redelivery sends exactly what was indexed before."""
    assert bulk_item(make_event(), "p") == bulk_item(make_event(), "p")


def test_job_key_at_the_id_limit_is_accepted_and_one_byte_more_is_refused() -> None:
    bulk_item(make_event(job_key="k" * MAX_ID_BYTES), "p")
    with pytest.raises(JobKeyTooLongError) as caught:
        bulk_item(make_event(job_key="k" * (MAX_ID_BYTES - 1) + "é"), "p")
    assert caught.value.reason == "job-key-too-long"


@pytest.mark.parametrize("prefix", ["sarchive-jobs", "site.a-jobs", "jobs_2"])
def test_valid_index_prefixes_are_accepted(prefix: str) -> None:
    assert check_index_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "Sarchive", "jÖbs", "-jobs", "_jobs", ".jobs", "a b",
                                    "a/b", "a*", "a,b", "a#b", "a:b", "x" * 248])
def test_invalid_index_prefixes_are_refused_with_the_reason(prefix: str) -> None:
    with pytest.raises(ValueError, match="index prefix"):
        check_index_prefix(prefix)
