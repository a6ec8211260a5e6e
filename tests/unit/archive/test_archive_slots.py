"""Slot resolution: duplicates are no-ops; reused ids and changed jobs are stored beside."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC

import pytest

from consumers.archive.slots import Resolution, resolve, slot_tag
from schemas.archive_layout import ArchivePath, Layout, Period, UnsafeNameError
from schemas.model import JobEvent, SpoolFile

MakeEvent = Callable[..., JobEvent]
LAYOUT = Layout.from_setting("sarchive", Period.NONE, UTC)


class FakeArchive:
    """An archive as a dict of path -> bytes (resolve() only reads)."""

    def __init__(self) -> None:
        self.files: dict[ArchivePath, bytes] = {}

    def read(self, path: ArchivePath) -> bytes | None:
        return self.files.get(path)

    def store(self, event: JobEvent, with_metadata: bool = True) -> Resolution:
        resolution = resolve(event, LAYOUT.place(event), self.read, with_metadata)
        self.files.update(resolution.to_write)
        return resolution

    def names(self) -> list[str]:
        return sorted(str(p) for p in self.files)


def test_first_delivery_writes_data_files_and_sidecar(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    resolution = archive.store(make_event())
    assert not resolution.duplicate and not resolution.collision and not resolution.variant
    assert archive.names() == ["job.4711_environment", "job.4711_metadata.json",
                               "job.4711_script"]


def test_redelivery_is_a_duplicate_even_when_read_again_later(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.store(make_event())
    again = archive.store(make_event(read_time=999, producer_version="0.2.0"))
    assert again.duplicate
    assert len(archive.files) == 3


def test_reused_job_id_is_stored_beside_under_a_tag(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.store(make_event())
    later = make_event(submit_time=1_800_000_000_000, script=b"#!/bin/sh\necho other\n")
    resolution = archive.store(later)
    tag = slot_tag(later, LAYOUT.place(later).files)
    assert resolution.collision and not resolution.duplicate
    assert [str(f.path) for f in resolution.files] == [
        f"job.4711_script.{tag}", f"job.4711_environment.{tag}"]
    assert str(resolution.metadata) == f"job.4711_metadata.json.{tag}"
    assert len(archive.files) == 6
    assert archive.store(later).duplicate  # and its redelivery is found there


def test_reused_job_id_with_identical_files_is_still_a_different_job(
        make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.store(make_event())
    resolution = archive.store(make_event(submit_time=1_800_000_000_000))
    assert resolution.collision
    assert len(archive.files) == 6


def test_same_job_with_other_bytes_keeps_both_versions(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    first = make_event()
    archive.store(first)
    changed = make_event(spool_files=(
        first.spool_files[0], SpoolFile("environment", b"\x01\x00\x00\x00HOME=<redacted>\x00")))
    resolution = archive.store(changed)
    assert resolution.variant and not resolution.collision
    assert archive.files[ArchivePath((), "job.4711_environment")] == (
        first.spool_files[1].content)


def test_interrupted_write_is_completed(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    event = make_event()
    archive.store(event)
    del archive.files[ArchivePath((), "job.4711_environment")]
    resolution = archive.store(event)
    assert [str(p) for p, _ in resolution.to_write] == ["job.4711_environment"]
    assert not resolution.collision


def test_redelivery_over_an_indented_sidecar_of_an_earlier_version_is_a_duplicate(
        make_event: MakeEvent) -> None:
    """Sidecars are not byte-compared: the compact format does not re-store old jobs."""
    archive = FakeArchive()
    archive.store(make_event())
    sidecar = ArchivePath((), "job.4711_metadata.json")
    archive.files[sidecar] = (json.dumps(json.loads(archive.files[sidecar]), indent=2,
                                         sort_keys=True, ensure_ascii=False) + "\n").encode()
    again = archive.store(make_event())
    assert again.duplicate and not again.collision and not again.variant
    assert len(archive.files) == 3


def test_redelivery_over_a_sidecar_written_before_modules_were_recorded_is_a_duplicate(
        make_event: MakeEvent) -> None:
    """An older sidecar lacks "modules": still the same job, neither collision nor variant."""
    archive = FakeArchive()
    event = make_event(script=b"#!/bin/sh\nmodule load gcc/12\n")
    archive.store(event)
    sidecar = ArchivePath((), "job.4711_metadata.json")
    document = json.loads(archive.files[sidecar])
    assert document.pop("modules") == ["gcc/12"]
    archive.files[sidecar] = json.dumps(document, sort_keys=True).encode() + b"\n"
    again = archive.store(event)
    assert again.duplicate and not again.collision and not again.variant
    assert b"modules" not in archive.files[sidecar]  # the old sidecar is left as it was


def test_foreign_file_without_sidecar_is_never_overwritten(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.files[ArchivePath((), "job.4711_script")] = b"written by the old sarchive"
    resolution = archive.store(make_event())
    assert resolution.collision
    assert archive.files[ArchivePath((), "job.4711_script")] == b"written by the old sarchive"


def test_without_metadata_identity_is_by_content(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.store(make_event(), with_metadata=False)
    assert archive.names() == ["job.4711_environment", "job.4711_script"]
    assert archive.store(make_event(submit_time=1_800_000_000_000),
                         with_metadata=False).duplicate
    other = archive.store(make_event(script=b"other"), with_metadata=False)
    assert other.collision
    assert len(archive.files) == 4


def test_tagged_slot_holding_other_bytes_refuses_the_event(make_event: MakeEvent) -> None:
    archive = FakeArchive()
    archive.store(make_event())
    later = make_event(submit_time=1_800_000_000_000)
    tag = slot_tag(later, LAYOUT.place(later).files)
    archive.files[ArchivePath((), f"job.4711_script.{tag}")] = b"tampered"
    with pytest.raises(UnsafeNameError) as caught:
        archive.store(later)
    assert caught.value.reason == "path-conflict"
