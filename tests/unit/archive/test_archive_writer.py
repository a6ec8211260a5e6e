"""The file system adapter: durable no-overwrite writes, exact modes, no symlink followed."""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import INotify, flags

from consumers.archive.archive_root import check_root, sweep_temporary_files
from consumers.archive.config import parse_mode
from consumers.archive.errors import ArchiveIOError, UnsafeArchiveEntryError
from consumers.archive.fsync_pool import FSYNC_THREADS
from consumers.archive.safe_tree import DIR_CACHE_SIZE
from consumers.archive.staging import STAGING_DIRECTORY, NamedStaging, UnnamedStaging
from consumers.archive.writer import MAX_OPEN_FILES, ArchiveWriter, WriteReport
from schemas.archive_layout import TEMP_PREFIX, ArchivePath

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    archive.mkdir()
    return archive


@pytest.fixture(params=[True, False], ids=["unnamed-files", "named-temporaries"])
def writer(root: Path, request: pytest.FixtureRequest) -> Iterator[ArchiveWriter]:
    """Both ways of writing: O_TMPFILE files, and the named temporary files of the fallback."""
    archive_writer = ArchiveWriter(root, 0o640, 0o750, unnamed_temporaries=request.param)
    yield archive_writer
    archive_writer.close()


@pytest.fixture
def wide_open_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def temporaries(root: Path) -> list[Path]:
    """Temporary files anywhere below the root (the staging directory itself is none)."""
    return [p for p in root.rglob(".sarchive-tmp-*") if p.is_file()]


def recording_listdir(listed: list[str]) -> Callable[[int], list[str]]:
    """os.listdir that records the path of every directory it lists."""
    def listdir(fd: int) -> list[str]:
        listed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return os.listdir(fd)
    return listdir


def write(writer: ArchiveWriter, *files: tuple[str, bytes]) -> None:
    with writer.session() as session:
        session.write([(_path(name), content) for name, content in files])


def write_report(writer: ArchiveWriter, *files: tuple[str, bytes]) -> WriteReport:
    with writer.session() as session:
        return session.write([(_path(name), content) for name, content in files])


def _path(name: str) -> ArchivePath:
    *directory, file_name = name.split("/")
    return ArchivePath(tuple(directory), file_name)


@contextmanager
def names_created_in(directory: Path) -> Iterator[list[str]]:
    """Every name that appears in the directory (inotify IN_CREATE) while the block runs:
    a temporary name shows up even when it is removed again."""
    inotify = INotify()
    try:
        inotify.add_watch(str(directory), flags.CREATE | flags.Q_OVERFLOW)
        names: list[str] = []
        yield names
        events = inotify.read(timeout=0)
        assert not any(event.mask & flags.Q_OVERFLOW for event in events)
        names.extend(event.name for event in events)
    finally:
        inotify.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


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


def test_sweep_lists_only_the_staging_directory_and_removes_abandoned_temporaries_only(
        root: Path) -> None:
    staging = root / STAGING_DIRECTORY
    staging.mkdir()
    for name in (".sarchive-tmp-1", ".sarchive-tmp-2", ".sarchive-tmp-live", "not-ours"):
        (staging / name).write_bytes(b"crash")
    for day in range(50):  # an archive the sweep has no reason to look at
        (root / f"202403{day:02d}/sub").mkdir(parents=True)
        (root / f"202403{day:02d}/job.{day}_script").write_bytes(b"keep")
    listed: list[str] = []
    live = os.open(staging / ".sarchive-tmp-live", os.O_WRONLY)
    try:
        fcntl.flock(live, fcntl.LOCK_EX)
        assert sweep_temporary_files(root, recording_listdir(listed)) == 2
    finally:
        os.close(live)
    assert listed == [str(staging)]
    assert sorted(p.name for p in staging.iterdir()) == [".sarchive-tmp-live", "not-ours"]
    assert len(list(root.glob("*/job.*_script"))) == 50


def test_sweep_of_an_archive_without_staging_directory_lists_nothing(root: Path) -> None:
    (root / "20240315").mkdir()
    listed: list[str] = []
    assert sweep_temporary_files(root, recording_listdir(listed)) == 0
    assert listed == []


def test_sweep_refuses_a_symlinked_staging_directory(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".sarchive-tmp-1").write_bytes(b"not ours to judge")
    (root / STAGING_DIRECTORY).symlink_to(outside)
    with pytest.raises(ArchiveIOError) as caught:
        sweep_temporary_files(root)
    assert caught.value.code_name == "ENOTDIR"  # O_DIRECTORY|O_NOFOLLOW on a symlink
    assert (outside / ".sarchive-tmp-1").exists()


def test_missing_root_is_reported_with_its_errno(tmp_path: Path) -> None:
    with pytest.raises(ArchiveIOError) as caught:
        check_root(tmp_path / "nope")
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
        time.sleep(0.01)  # the scenario: a slow disk, which a link not waiting would overtake
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


@pytest.mark.usefixtures("wide_open_umask")
def test_unnamed_files_get_the_configured_mode_and_no_temporary_name_ever_appears(
        root: Path) -> None:
    writer = ArchiveWriter(root, 0o640, 0o750)
    (root / "d").mkdir()
    with names_created_in(root / "d") as created:
        write(writer, ("d/a", b"one"), ("d/b", b"two"))
    assert isinstance(writer.staging, UnnamedStaging)  # O_TMPFILE works: the fast path taken
    assert sorted(created) == ["a", "b"]  # final names only, each made once
    assert [(root / "d/a").read_bytes(), (root / "d/b").read_bytes()] == [b"one", b"two"]
    assert mode(root / "d/a") == mode(root / "d/b") == 0o640


@pytest.mark.usefixtures("wide_open_umask")
def test_the_named_fallback_writes_through_temporary_files_and_removes_them(
        root: Path) -> None:
    writer = ArchiveWriter(root, 0o640, 0o750, unnamed_temporaries=False)
    write(writer, ("first", b"makes the staging directory"))
    (root / "d").mkdir()
    with names_created_in(root / "d") as created, \
            names_created_in(root / STAGING_DIRECTORY) as staged:
        write(writer, ("d/a", b"one"), ("d/b", b"two"))
    assert isinstance(writer.staging, NamedStaging)
    assert sorted(created) == ["a", "b"]  # temporaries are never made beside the final name
    assert len([name for name in staged if name.startswith(TEMP_PREFIX)]) == 2
    assert list((root / STAGING_DIRECTORY).iterdir()) == []
    assert sorted(p.name for p in (root / "d").iterdir()) == ["a", "b"]
    assert [(root / "d/a").read_bytes(), (root / "d/b").read_bytes()] == [b"one", b"two"]
    assert mode(root / "d/a") == mode(root / "d/b") == 0o640


# A writer process that dies (os._exit from the fsync thread) after it wrote a file and
# before it linked anything: what a crash leaves behind.
_CRASHING_WRITER = """
import os, sys
from pathlib import Path
from schemas.archive_layout import ArchivePath
from consumers.archive.writer import ArchiveWriter

def crash(fd):
    os._exit(9)

os.fsync = crash
writer = ArchiveWriter(Path(sys.argv[1]), 0o640, 0o750,
                       unnamed_temporaries=sys.argv[2] == "unnamed")
with writer.session() as session:
    session.write([(ArchivePath(("d",), f"f{i}"), b"x" * 4096) for i in range(20)])
"""


def crash_while_writing(root: Path, how: str) -> None:
    result = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(root), how],
                            cwd=REPO, capture_output=True, check=False)
    assert result.returncode == 9, result.stderr.decode()


def test_a_crash_of_the_named_fallback_leaves_temporary_files_that_the_sweep_removes(
        root: Path) -> None:
    crash_while_writing(root, "named")
    leftovers = temporaries(root)
    assert leftovers  # written, never linked nor removed
    assert {p.parent.name for p in leftovers} == {STAGING_DIRECTORY}
    listed: list[str] = []
    assert sweep_temporary_files(root, recording_listdir(listed)) == len(leftovers)
    assert listed == [str(root / STAGING_DIRECTORY)]  # not "d", nor any other directory
    assert temporaries(root) == []
    assert list((root / "d").iterdir()) == []


def test_a_crash_while_writing_unnamed_files_leaves_nothing_behind(root: Path) -> None:
    crash_while_writing(root, "unnamed")
    assert list((root / "d").iterdir()) == []


def test_where_proc_cannot_name_a_file_the_writer_uses_named_files_from_the_first(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ArchiveWriter(root, 0o640, 0o750)
    writer.proc_fd_dir = str(tmp_path / "no-proc")  # as if /proc were not mounted
    linked_from: list[str] = []
    real_link = os.link

    def recorded_link(source: str, *args: Any, **kwargs: Any) -> None:
        linked_from.append(source)
        real_link(source, *args, **kwargs)

    monkeypatch.setattr(os, "link", recorded_link)
    write(writer, ("d/a", b"one"), ("d/b", b"two"))
    assert isinstance(writer.staging, NamedStaging)
    assert all(name.startswith(TEMP_PREFIX) for name in linked_from)  # found out up front
    assert [(root / "d/a").read_bytes(), (root / "d/b").read_bytes()] == [b"one", b"two"]
    assert mode(root / "d/a") == 0o640
    assert temporaries(root) == []


def test_an_o_tmpfile_refusal_met_later_falls_back_for_that_file_and_the_batch_succeeds(
        root: Path) -> None:
    writer = ArchiveWriter(root, 0o640, 0o750)
    write(writer, ("local/a", b"a"))
    assert isinstance(writer.staging, UnnamedStaging)
    # What a kernel without O_TMPFILE sees (O_TMPFILE includes O_DIRECTORY): a real EISDIR,
    # as a directory on a file system without O_TMPFILE gives EOPNOTSUPP.
    assert isinstance(writer.staging, UnnamedStaging)
    writer.staging.flags = os.O_WRONLY | os.O_DIRECTORY | os.O_CLOEXEC
    (root / "nfs").mkdir()
    with names_created_in(root / "nfs") as created:
        report = write_report(writer, ("nfs/b", b"b"), ("nfs/c", b"c"))
    assert report.written == 2
    assert isinstance(writer.staging, NamedStaging)
    assert sorted(created) == ["b", "c"]  # staged in the staging directory, made for them
    assert list((root / STAGING_DIRECTORY).iterdir()) == []
    assert [(root / "nfs/b").read_bytes(), (root / "nfs/c").read_bytes()] == [b"b", b"c"]
    assert mode(root / "nfs/b") == 0o640
    assert temporaries(root) == []


def test_an_unnamed_file_that_proc_cannot_link_is_written_again_with_a_name(
        root: Path, tmp_path: Path) -> None:
    writer = ArchiveWriter(root, 0o640, 0o750)
    write(writer, ("d/a", b"a"))
    assert isinstance(writer.staging, UnnamedStaging)
    writer.staging.proc_fd_dir = str(tmp_path / "no-proc")  # link(2) now fails with ENOENT
    big = os.urandom(3 << 20)
    report = write_report(writer, ("d/b", big), ("d/c", b"c"))
    assert report.written == 2
    assert isinstance(writer.staging, NamedStaging)
    assert [(root / "d/b").read_bytes(), (root / "d/c").read_bytes()] == [big, b"c"]
    assert mode(root / "d/b") == 0o640
    assert temporaries(root) == []


def test_a_link_failing_because_its_directory_was_removed_fails_the_batch(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOENT from link(2) falls back only when /proc cannot name the file."""
    writer = ArchiveWriter(root, 0o640, 0o750)
    (root / "d").mkdir()
    real_fsync = os.fsync

    def fsync_then_remove_the_directory(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            (root / "d").rmdir()  # nothing in it has a name yet

    monkeypatch.setattr(os, "fsync", fsync_then_remove_the_directory)
    with pytest.raises(ArchiveIOError) as caught:
        write(writer, ("d/a", b"a"))
    assert caught.value.code_name == "ENOENT"
    assert isinstance(writer.staging, UnnamedStaging)


def test_more_directories_than_the_cache_holds_are_all_written_and_no_descriptor_leaks(
        writer: ArchiveWriter, root: Path) -> None:
    count = DIR_CACHE_SIZE * 3 + 5
    before = open_descriptors()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Room for the cached directories, the root, a walk and a file: an unbounded cache
    # would run out of descriptors (EMFILE).
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + DIR_CACHE_SIZE + 8, hard))
    try:
        with writer.session() as session:
            report = session.write([(_path(f"a{i}/b/f"), b"%d" % i) for i in range(count)])
            read_back = [session.read(_path(f"a{i}/b/f")) for i in [*range(count), 0, 1]]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.written == count
    assert read_back == [b"%d" % i for i in [*range(count), 0, 1]]
    assert all((root / f"a{i}/b/f").read_bytes() == b"%d" % i for i in range(count))
    assert open_descriptors() == before


def test_a_failed_batch_leaks_no_descriptor(writer: ArchiveWriter, root: Path) -> None:
    (root / "plain-file").write_bytes(b"")
    before = open_descriptors()
    with pytest.raises(ArchiveIOError):
        write(writer, *((f"d{i}/f", b"x") for i in range(DIR_CACHE_SIZE + 3)),
              ("plain-file/b", b"b"))
    assert open_descriptors() == before


def test_a_directory_missing_at_a_read_is_found_once_the_same_session_made_it(
        writer: ArchiveWriter) -> None:
    with writer.session() as session:
        assert session.read(_path("new/f")) is None
        session.write([(_path("new/f"), b"x")])
        assert session.read(_path("new/f")) == b"x"


def test_every_directory_a_batch_makes_is_fsynced_in_its_parent(
        writer: ArchiveWriter, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            synced.add((status.st_dev, status.st_ino))

    (root / "old").mkdir()
    monkeypatch.setattr(os, "fsync", recording_fsync)
    with writer.session() as session:
        session.read(_path("old/new/deeper/f"))  # a miss is not kept
        session.write([(_path("old/new/deeper/f"), b"x")])
    directories = [root / "old", root / "old/new", root / "old/new/deeper"]
    assert {(d.stat().st_dev, d.stat().st_ino) for d in directories} <= synced


def fsync_threads() -> int:
    return sum(thread.name.startswith("archive-fsync") for thread in threading.enumerate())


def test_close_stops_the_fsync_threads_and_a_later_session_starts_them_again(
        root: Path) -> None:
    before = fsync_threads()
    writer = ArchiveWriter(root, 0o640, 0o750)
    write(writer, ("d/a", b"a"))
    assert fsync_threads() == before + FSYNC_THREADS
    writer.close()
    assert fsync_threads() == before
    write(writer, ("d/b", b"b"))
    writer.close()
    assert (root / "d/b").read_bytes() == b"b"
    assert fsync_threads() == before


def test_a_failed_fsync_fails_the_round_only_after_every_other_fsync_returned(
        writer: ArchiveWriter, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No descriptor is closed while a slow fsync still uses it; the error is not lost."""
    real_fsync = os.fsync
    finished: list[int] = []

    def first_fails_others_are_slow(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            real_fsync(fd)
            return
        if not finished:
            finished.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        time.sleep(0.05)  # the scenario: a slow disk, still in fsync after the failure
        real_fsync(fd)  # EBADF here if the round had closed the descriptor
        finished.append(fd)

    monkeypatch.setattr(os, "fsync", first_fails_others_are_slow)
    with pytest.raises(ArchiveIOError) as caught:
        write(writer, *((f"d/f{i}", b"x") for i in range(20)))
    assert caught.value.code_name == "EIO"
    assert len(finished) == 20
    assert temporaries(root) == [] and list((root / "d").iterdir()) == []
