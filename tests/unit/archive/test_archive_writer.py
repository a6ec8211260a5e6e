"""The file system adapter: durable no-overwrite writes, exact modes, no symlink followed."""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.archive.layout import ArchivePath
from consumers.archive.writer import (
    MAX_OPEN_FILES,
    ArchiveIOError,
    ArchiveWriter,
    UnsafeArchiveEntryError,
    parse_mode,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    archive.mkdir()
    return archive


@pytest.fixture
def writer(root: Path) -> ArchiveWriter:
    return ArchiveWriter(root, 0o640, 0o750)


@pytest.fixture
def wide_open_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".sarchive-tmp-*")]


def write(writer: ArchiveWriter, *files: tuple[str, bytes]) -> None:
    with writer.session() as session:
        session.write([(_path(name), content) for name, content in files])


def _path(name: str) -> ArchivePath:
    *directory, file_name = name.split("/")
    return ArchivePath(tuple(directory), file_name)


@pytest.mark.usefixtures("wide_open_umask")
def test_files_and_new_directories_get_exactly_the_configured_modes(
        writer: ArchiveWriter, root: Path) -> None:
    root.chmod(0o755)
    with writer.session() as session:
        report = session.write([(_path("2024/03/a.sh"), b"one"), (_path("2024/b.sh"), b"two")])
    assert report.written == 2
    assert (root / "2024/03/a.sh").read_bytes() == b"one"
    assert (root / "2024/b.sh").read_bytes() == b"two"
    assert stat.S_IMODE((root / "2024/03/a.sh").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "2024").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "2024/03").stat().st_mode) == 0o750
    assert stat.S_IMODE(root.stat().st_mode) == 0o755  # the operator's root is left alone
    assert set(report.seconds) == {"write", "fsync", "link", "dirsync"}
    assert temporaries(root) == []


def test_modes_do_not_depend_on_a_restrictive_umask(root: Path) -> None:
    previous = os.umask(0o077)
    try:
        write(ArchiveWriter(root, 0o644, 0o755), ("d/f", b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((root / "d/f").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o755


def test_a_file_that_appeared_meanwhile_with_the_same_bytes_is_left_as_is(
        writer: ArchiveWriter, root: Path) -> None:
    (root / "f").write_bytes(b"same")
    inode = (root / "f").stat().st_ino
    with writer.session() as session:
        report = session.write([(_path("f"), b"same")])
    assert (report.written, report.already_present) == (0, 1)
    assert (root / "f").stat().st_ino == inode


def test_a_file_that_appeared_meanwhile_with_other_bytes_is_never_overwritten(
        writer: ArchiveWriter, root: Path) -> None:
    (root / "f").write_bytes(b"theirs")
    with pytest.raises(ArchiveIOError) as caught:
        write(writer, ("g", b"new"), ("f", b"ours"))
    assert caught.value.code == errno.EEXIST
    assert (root / "f").read_bytes() == b"theirs"
    assert temporaries(root) == []


def test_a_failed_write_leaves_only_complete_files_and_no_temporary_ones(
        writer: ArchiveWriter, root: Path) -> None:
    (root / "plain-file").write_bytes(b"")
    with pytest.raises(ArchiveIOError):
        write(writer, ("ok/a", b"a"), ("plain-file/b", b"b"))
    assert temporaries(root) == []
    assert (root / "ok/a").read_bytes() == b"a"


def test_read_returns_bytes_or_none(writer: ArchiveWriter, root: Path) -> None:
    (root / "d").mkdir()
    (root / "d/f").write_bytes(b"content")
    with writer.session() as session:
        assert session.read(_path("d/f")) == b"content"
        assert session.read(_path("d/missing")) is None
        assert session.read(_path("missing-dir/f")) is None


def test_a_symlinked_directory_inside_the_archive_is_never_followed(
        writer: ArchiveWriter, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"secret")
    (root / "20240315").symlink_to(outside)
    with writer.session() as session, pytest.raises(UnsafeArchiveEntryError):
        session.read(_path("20240315/f"))
    with pytest.raises(ArchiveIOError):
        write(writer, ("20240315/new", b"x"))
    assert sorted(p.name for p in outside.iterdir()) == ["f"]


def test_a_symlinked_or_special_file_is_refused_on_read(
        writer: ArchiveWriter, root: Path, tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (root / "link").symlink_to(tmp_path / "target")
    os.mkfifo(root / "fifo")
    with writer.session() as session:
        with pytest.raises(UnsafeArchiveEntryError, match="symlink"):
            session.read(_path("link"))
        with pytest.raises(UnsafeArchiveEntryError, match="regular"):
            session.read(_path("fifo"))


def test_the_root_itself_may_be_a_symlink(root: Path, tmp_path: Path) -> None:
    (tmp_path / "root-link").symlink_to(root)
    write(ArchiveWriter(tmp_path / "root-link", 0o640, 0o750), ("d/f", b"x"))
    assert (root / "d/f").read_bytes() == b"x"


def test_sweep_removes_abandoned_temporary_files_only(
        writer: ArchiveWriter, root: Path, tmp_path: Path) -> None:
    (root / "a/b").mkdir(parents=True)
    (root / ".sarchive-tmp-1").write_bytes(b"crash")
    (root / "a/b/.sarchive-tmp-2").write_bytes(b"crash")
    (root / "a/b/job.1_script").write_bytes(b"keep")
    (root / "a/.sarchive-tmp-live").write_bytes(b"being written")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".sarchive-tmp-3").write_bytes(b"not ours to judge")
    (root / "link").symlink_to(outside)
    live = os.open(root / "a/.sarchive-tmp-live", os.O_WRONLY)
    try:
        fcntl.flock(live, fcntl.LOCK_EX)
        assert writer.sweep_temporary_files() == 2
    finally:
        os.close(live)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "a/.sarchive-tmp-live", "a/b/job.1_script"]
    assert (outside / ".sarchive-tmp-3").exists()


def test_missing_root_is_reported_with_its_errno(tmp_path: Path) -> None:
    with pytest.raises(ArchiveIOError) as caught:
        ArchiveWriter(tmp_path / "nope", 0o640, 0o750).check_root()
    assert caught.value.code_name == "ENOENT"


@pytest.mark.parametrize(("text", "mode"), [("0640", 0o640), ("640", 0o640), ("0o750", 0o750),
                                            ("0", 0)])
def test_modes_are_octal_strings(text: str, mode: int) -> None:
    assert parse_mode(text, "file_mode") == mode


@pytest.mark.parametrize("text", ["0648", "rw-r-----", "01777", ""])
def test_bad_modes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="file_mode"):
        parse_mode(text, "file_mode")


def test_a_batch_larger_than_the_open_file_budget_is_written_in_rounds(
        writer: ArchiveWriter, root: Path) -> None:
    count = MAX_OPEN_FILES * 2 + 7
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + MAX_OPEN_FILES + 16, hard))
    try:
        with writer.session() as session:
            report = session.write([(_path(f"d/f{i}"), b"%d" % i) for i in range(count)])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.written == count
    assert all((root / f"d/f{i}").read_bytes() == b"%d" % i for i in range(count))


def test_every_file_of_a_round_is_fsynced_before_the_first_link(
        writer: ArchiveWriter, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def slow_fsync(fd: int) -> None:
        time.sleep(0.01)  # so that a link not waiting for the fsyncs would overtake them
        real_fsync(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            events.append("fsync")

    def recorded_link(*args: Any, **kwargs: Any) -> None:
        events.append("link")
        real_link(*args, **kwargs)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(os, "link", recorded_link)
    write(writer, *((f"d/f{i}", b"x" * i) for i in range(40)))
    assert events == ["fsync"] * 40 + ["link"] * 40


def test_a_failed_fsync_links_nothing_and_leaves_no_temporary_file(
        writer: ArchiveWriter, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    calls = 0

    def failing_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(ArchiveIOError) as caught:
        write(writer, *((f"d/f{i}", b"x") for i in range(10)))
    assert caught.value.code_name == "EIO"
    assert sorted(p.name for p in (root / "d").iterdir()) == []
