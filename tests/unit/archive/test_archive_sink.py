"""ArchiveSink on a real file system: batches, duplicates, collisions, rejections, outages."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.archive.config import ArchiveConfig
from consumers.archive.sink import ArchiveSink
from consumers.archive.staging import STAGING_DIRECTORY
from consumers.common.sink import SinkFatalError, SinkUnavailableError
from schemas.model import JobEvent

MakeEvent = Callable[..., JobEvent]


def make_sink(root: Path, registry: CollectorRegistry, **settings: Any) -> ArchiveSink:
    """Dates in UTC unless settings say otherwise: the fixtures' 23:30 UTC shows the UTC day."""
    return ArchiveSink(ArchiveConfig(archive=root, **{"time_zone": "UTC", **settings}),
                       registry)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_batch_is_written_and_counted(tmp_path: Path, registry: CollectorRegistry,
                                      make_event: MakeEvent) -> None:
    sink = make_sink(tmp_path, registry)
    sink.prepare()
    assert sink.write_batch([make_event(job_id="1"), make_event(job_id="2")]) == []
    assert files(tmp_path) == [
        f"20240315/job.{i}_{kind}" for i in "12" for kind in
        ("environment", "metadata.json", "script")]
    assert metric(registry, "sarchive_archive_files_written_total") == 6
    assert metric(registry, "sarchive_archive_jobs_archived_total") == 2, "one per job"
    assert metric(registry, "sarchive_archive_io_seconds_count", stage="fsync") == 1


def test_dates_follow_the_time_zone_setting_and_the_sidecar_keeps_utc(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    """23:30 UTC on the 15th is 00:30 on the 16th in Brussels."""
    sink = make_sink(tmp_path, registry, time_zone="Europe/Brussels")
    assert sink.write_batch([make_event()]) == []
    assert files(tmp_path) == [
        "20240316/job.4711_environment", "20240316/job.4711_metadata.json",
        "20240316/job.4711_script"]
    sidecar = json.loads((tmp_path / "20240316/job.4711_metadata.json").read_bytes())
    assert sidecar["submit_time_iso"] == "2024-03-15T23:30:00.000+00:00"


def test_the_same_job_twice_in_one_batch_is_written_once(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    sink = make_sink(tmp_path, registry)
    assert sink.write_batch([make_event(), make_event(read_time=1)]) == []
    assert len(files(tmp_path)) == 3
    assert metric(registry, "sarchive_archive_duplicates_skipped_total") == 1
    sink.write_batch([make_event()])
    assert metric(registry, "sarchive_archive_duplicates_skipped_total") == 2
    assert metric(registry, "sarchive_archive_files_written_total") == 3
    assert metric(registry, "sarchive_archive_jobs_archived_total") == 1, "duplicates not"


def test_reused_job_id_in_one_batch_is_stored_beside_and_counted(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    sink = make_sink(tmp_path, registry)
    sink.write_batch([make_event(), make_event(submit_time=1_710_545_400_001)])
    assert len(files(tmp_path)) == 6
    assert metric(registry, "sarchive_archive_id_collisions_total") == 1


def test_unsafe_events_are_rejected_by_index_and_the_rest_written(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    sink = make_sink(root, registry)
    rejections = sink.write_batch([make_event(job_id="1"), make_event(job_id="../../x"),
                                   make_event(job_id="2"), make_event(user="a/b")])
    assert [(r.index, r.reason) for r in rejections] == [(1, "unsafe-path"), (3, "unsafe-path")]
    assert len(files(root)) == 6
    assert files(tmp_path) == [f"archive/{f}" for f in files(root)]


def test_symlink_in_the_archive_rejects_the_event_and_writes_nothing_through_it(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "20240315").symlink_to(outside)
    rejections = make_sink(root, registry).write_batch([make_event()])
    assert [(r.index, r.reason) for r in rejections] == [(0, "unsafe-archive-entry")]
    assert list(outside.iterdir()) == []


def test_no_metadata_writes_data_files_only(tmp_path: Path, registry: CollectorRegistry,
                                            make_event: MakeEvent) -> None:
    make_sink(tmp_path, registry, metadata=False, layout="per-user").write_batch([make_event()])
    assert files(tmp_path) == ["alice/2024/03/4711-myjob.env", "alice/2024/03/4711-myjob.sh"]


def test_missing_root_is_fatal(tmp_path: Path, registry: CollectorRegistry) -> None:
    with pytest.raises(SinkFatalError, match="create the archive directory"):
        make_sink(tmp_path / "nope", registry).prepare()


def test_prepare_sweeps_and_counts_temporary_files(tmp_path: Path,
                                                   registry: CollectorRegistry) -> None:
    (tmp_path / STAGING_DIRECTORY).mkdir()
    (tmp_path / STAGING_DIRECTORY / ".sarchive-tmp-abc").write_bytes(b"")
    make_sink(tmp_path, registry).prepare()
    assert not (tmp_path / STAGING_DIRECTORY / ".sarchive-tmp-abc").exists()
    assert metric(registry, "sarchive_archive_temporary_files_swept_total") == 1


def test_named_temporaries_cannot_reach_a_directory_on_another_file_system_fatal(
        tmp_path: Path, registry: CollectorRegistry, make_event: MakeEvent,
        tmpfs: Callable[[Path, str], Path]) -> None:
    """EXDEV is no outage to wait out: the service stops with one clear line."""
    (tmp_path / "20240315").mkdir()
    tmpfs(tmp_path / "20240315", "size=1m")
    sink = make_sink(tmp_path, registry)
    sink.writer.tmpfile_flags = None  # as on a file system without O_TMPFILE
    with pytest.raises(SinkFatalError, match="one file system"):
        sink.write_batch([make_event()])
    assert metric(registry, "sarchive_archive_io_errors_total", error="EXDEV") == 1
    assert list((tmp_path / STAGING_DIRECTORY).iterdir()) == []


@pytest.fixture
def small_filesystem(tmp_path: Path, tmpfs: Callable[[Path, str], Path]) -> Path:
    """A 1 MiB tmpfs: real ENOSPC and, remounted, real EROFS."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    return tmpfs(mountpoint, "size=1m")


def remount(mountpoint: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mountpoint)], check=True)


def test_disk_full_is_retryable_and_leaves_nothing_half_written(
        small_filesystem: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    sink = make_sink(small_filesystem, registry)
    big = make_event(script=b"#" * (2 << 20))
    with pytest.raises(SinkUnavailableError, match="No space left"):
        sink.write_batch([make_event(job_id="1"), big])
    assert metric(registry, "sarchive_archive_io_errors_total", error="ENOSPC") == 1
    assert [f for f in files(small_filesystem) if "sarchive-tmp" in f] == []
    remount(small_filesystem, "size=8m")
    assert sink.write_batch([make_event(job_id="1"), big]) == []
    assert (small_filesystem / "20240315/job.4711_script").read_bytes() == big.script


def test_read_only_file_system_is_retryable(
        small_filesystem: Path, registry: CollectorRegistry, make_event: MakeEvent) -> None:
    sink = make_sink(small_filesystem, registry)
    remount(small_filesystem, "ro")
    with pytest.raises(SinkUnavailableError, match="Read-only"):
        sink.write_batch([make_event()])
    assert metric(registry, "sarchive_archive_io_errors_total", error="EROFS") == 1
    remount(small_filesystem, "rw")
    assert sink.write_batch([make_event()]) == []
