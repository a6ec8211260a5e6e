"""The metadata sidecar: deterministic JSON of an event's metadata and where its files are."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC

import pytest

from consumers.archive.sidecar import event_modules, render_sidecar, sidecar_job_key
from schemas.archive_layout import Layout, Period
from schemas.job_modules import event_modules as schemas_event_modules
from schemas.model import REDACTED_MARKER, JobEvent, OwnerSource

MakeEvent = Callable[..., JobEvent]


def test_sidecar_records_metadata_sizes_digests_and_file_locations(
        make_event: MakeEvent) -> None:
    event = make_event(redacted_keys=("TOKEN",), script_truncated=True, script_size=10_000)
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    document = json.loads(render_sidecar(event, files))
    assert document["job_key"] == "clusterA:slurm:4711:1710545400000"
    assert document["submit_time_iso"] == "2024-03-15T23:30:00.000+00:00"
    assert document["user"] == "alice"
    assert document["directives"] == {"job-name": "myjob"}
    assert document["redacted_keys"] == ["TOKEN"]
    assert document["script_truncated"] is True
    assert document["script_size"] == 10_000
    assert document["script_sha256"] == event.script_sha256
    assert document["files"] == [
        {"role": f.role.value, "spool_name": f.spool_name, "path": str(f.path),
         "size": len(f.content), "sha256": hashlib.sha256(f.content).hexdigest()}
        for f in files]
    assert [f["path"] for f in document["files"]] == [
        "20240315/job.4711_script", "20240315/job.4711_environment"]
    assert "script" not in document and "environment" not in document


def test_sidecar_bytes_are_the_same_for_the_same_event(make_event: MakeEvent) -> None:
    event = make_event(directives={"b": "2", "a": "1"})
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    assert render_sidecar(event, files) == render_sidecar(make_event(
        directives={"a": "1", "b": "2"}), files)


def test_sidecar_is_one_line_of_utf8_json_with_sorted_keys(make_event: MakeEvent) -> None:
    event = make_event(job_name="ünïcode", directives={"b": "2", "a": "1"})
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    rendered = render_sidecar(event, files)
    assert rendered.endswith(b"\n") and rendered.count(b"\n") == 1
    assert "ünïcode".encode() in rendered  # not \u-escaped
    document = json.loads(rendered)
    assert list(document) == sorted(document)
    assert list(document["directives"]) == ["a", "b"]
    assert list(document["files"][0]) == sorted(document["files"][0])


def test_job_key_is_read_back_from_an_indented_sidecar_of_an_earlier_version(
        make_event: MakeEvent) -> None:
    event = make_event()
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    indented = json.dumps(json.loads(render_sidecar(event, files)), indent=2,
                          sort_keys=True, ensure_ascii=False) + "\n"
    assert sidecar_job_key(indented.encode()) == event.job_key


def test_job_key_is_read_back_from_a_sidecar(make_event: MakeEvent) -> None:
    event = make_event(job_name="ünïcode\nname")
    assert sidecar_job_key(render_sidecar(event, ())) == event.job_key


def test_files_that_are_not_our_sidecars_have_no_job_key() -> None:
    assert sidecar_job_key(b"\xff\xfe not json") is None
    assert sidecar_job_key(b'{"job_key": "x"}') is None  # no format marker: someone else's
    assert sidecar_job_key(b"[1, 2]") is None
    assert sidecar_job_key(b'{"format": "sarchive-archive-metadata/1", "job_key": 3}') is None


def test_sidecar_lists_the_modules_of_the_script_and_of_the_submission(
        make_event: MakeEvent) -> None:
    event = make_event(script=b"#!/bin/bash\nmodule load openmpi/4.1.5-gcc-12\nml -x\n",
                       environment=b"LOADEDMODULES=gcc/12:openmpi/4.1.5-gcc-12\0")
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    document = json.loads(render_sidecar(event, files))
    assert document["modules"] == ["gcc/12", "openmpi/4.1.5-gcc-12"]
    assert document["format"] == "sarchive-archive-metadata/1"


def test_sidecar_of_a_job_without_modules_has_an_empty_list(make_event: MakeEvent) -> None:
    event = make_event(script=b"#!/bin/sh\nsrun hostname\n", environment=b"HOME=/h\0")
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    assert json.loads(render_sidecar(event, files))["modules"] == []


def test_sidecar_carries_the_scheduler_owner_apart_from_the_user_claim(
        make_event: MakeEvent) -> None:
    event = make_event(user="bob", owner="alice", owner_uid=1000,
                       owner_source=OwnerSource.SCHEDULER)
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    document = json.loads(render_sidecar(event, files))
    assert (document["user"], document["owner"], document["owner_uid"],
            document["owner_source"]) == ("bob", "alice", 1000, "SCHEDULER")


@pytest.mark.parametrize("environment", [
    b"",
    b"PATH=/bin\0HOME=/home/a\0",
    b"LOADEDMODULES=GCC/12:OpenMPI/4\0PATH=/bin\0",
    b"PATH=/bin\0LOADEDMODULES=GCC/12:OpenMPI/4\0",
    b"LOADEDMODULES=first\0X=1\0LOADEDMODULES=last/1\0",  # the last one counts
    b"LOADEDMODULES=a\0LOADEDMODULES\0",  # an entry without '=': the empty value, last
    b"X=LOADEDMODULES=not-a-key\0LOADEDMODULES_OLD=no\0",
    b"XLOADEDMODULES=no\0",
    b"LOADEDMODULES=" + REDACTED_MARKER + b"\0",
    b"LOADEDMODULES=caf\xe9/1:x\0",  # not UTF-8: replaced, as environment_entries() does
    b"LOADEDMODULES=\0",
])
def test_modules_are_those_of_schemas_event_modules(make_event: MakeEvent,
                                                    environment: bytes) -> None:
    """The sidecar's LOADEDMODULES look-up in the raw bytes gives what the schema's
    event_modules (which decodes every entry) gives, for every shape of entry."""
    event = make_event(environment=environment, script=b"#!/bin/sh\nmodule load foss/2023\n")
    assert event_modules(event) == schemas_event_modules(event)
