"""The producer's state directory: one producer at a time, and its outbox survives a close."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from producer.event_meta import EventMeta
from producer.state_dir import StateDir, StateDirError
from runtime.config import ConfigError

META = EventMeta(job_key="c:slurm:1:1000", job_id="1", cluster="c", submit_time_ms=1000,
                 spool_name="hash.1/job.1")


def state_dir(path: Path) -> StateDir:
    return StateDir(path, outbox_max_bytes=1 << 20, outbox_max_events=10)


def test_constructor_touches_nothing_on_disk(tmp_path: Path) -> None:
    state_dir(tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_second_producer_on_a_locked_state_directory_is_refused_until_the_first_closes(
        tmp_path: Path) -> None:
    first = state_dir(tmp_path)
    first.open()
    second = state_dir(tmp_path)
    with pytest.raises(StateDirError, match="another sarchive-producer"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_unacknowledged_events_are_recovered_on_the_next_open(tmp_path: Path) -> None:
    first = state_dir(tmp_path)
    first.open()
    first.outbox.append(META, b"event")
    first.published.add("hash.2/job.2", 2000, "c:slurm:2:2000")
    first.close()
    reopened = state_dir(tmp_path)
    reopened.open()
    try:
        assert [entry.meta for entry in reopened.outbox.recovered] == [META]
        assert reopened.published.is_published("hash.2/job.2", 2000)
    finally:
        reopened.close()


def test_state_directory_that_cannot_be_a_directory_is_a_configuration_error(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^state_dir .*/file/state: cannot use it: .*Not a dir"):
        state_dir(tmp_path / "file" / "state").open()


def test_state_directory_failing_for_a_passing_cause_is_a_fatal_state_dir_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk may heal: exit 1, and systemd restarts the producer."""
    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "mkdir", disk_full)
    with pytest.raises(StateDirError, match=r"cannot use state directory .*No space left"):
        state_dir(tmp_path / "state").open()
