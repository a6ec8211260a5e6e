"""The outbox: durable until acknowledged, replayed on open, torn tails ignored, bounded."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import outbox as outbox_module
from producer.event_meta import EventMeta
from producer.outbox import (
    ACK_SUFFIX,
    RECORD_HEADER,
    SEGMENT_SUFFIX,
    Outbox,
    OutboxWriteError,
)


def meta(n: int) -> EventMeta:
    return EventMeta(job_key=f"c:slurm:{n}:1000", job_id=str(n), cluster="c",
                     submit_time_ms=1000 + n, spool_name=f"hash.{n % 10}/job.{n}")


def open_outbox(directory: Path, max_bytes: int = 1 << 30, max_events: int = 1_000_000,
                segment_bytes: int = 1 << 20) -> Outbox:
    return Outbox.open(directory, max_bytes, max_events, segment_bytes)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


def test_appended_events_are_replayed_in_order_with_their_bytes_after_reopen(
        tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    values = [bytes([n]) * (n + 1) for n in range(5)]
    for n, value in enumerate(values):
        outbox.append(meta(n), value)
    outbox.commit()
    outbox.close()
    reopened = open_outbox(tmp_path)
    assert [e.meta for e in reopened.recovered] == [meta(n) for n in range(5)]
    assert [reopened.read(e) for e in reopened.recovered] == values
    assert reopened.events == 5


def test_acknowledged_events_are_not_replayed(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    entries = [outbox.append(meta(n), b"v%d" % n) for n in range(4)]
    outbox.commit()
    outbox.ack(entries[1])
    outbox.ack(entries[3])
    assert outbox.events == 2
    outbox.close()
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["0", "2"]


def test_flushed_acks_survive_a_crash_without_close(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    entries = [outbox.append(meta(n), b"v") for n in range(3)]
    outbox.commit()
    outbox.ack(entries[0])
    outbox.flush_acks()  # as the service does at the end of every turn
    # No close(): as after SIGKILL, only what reached the files counts.
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["1", "2"]


def test_acks_not_flushed_before_a_crash_only_mean_producing_those_events_again(
        tmp_path: Path) -> None:
    """Acks are written once per turn: a crash within the turn replays its acknowledged
    events (consumers are idempotent); no event is lost either way."""
    outbox = open_outbox(tmp_path)
    entries = [outbox.append(meta(n), b"v") for n in range(3)]
    outbox.commit()
    outbox.ack(entries[0])
    outbox.flush_acks()
    outbox.ack(entries[1])
    (acks,) = tmp_path.glob(f"*{ACK_SUFFIX}")
    assert acks.stat().st_size == 12, "one ack record"
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["1", "2"]


def test_oldest_submit_time_is_the_first_unacknowledged_event_across_segments_and_reopen(
        tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, segment_bytes=100)  # a few records per segment
    assert outbox.oldest_submit_time_ms() is None, "empty"
    entries = [outbox.append(meta(n), b"x" * 40) for n in range(6)]
    outbox.commit()
    assert len(segments(tmp_path)) > 1
    outbox.ack(entries[1])
    assert outbox.oldest_submit_time_ms() == meta(0).submit_time_ms
    outbox.ack(entries[0])
    assert outbox.oldest_submit_time_ms() == meta(2).submit_time_ms
    outbox.ack(entries[2])
    outbox.close()
    reopened = open_outbox(tmp_path, segment_bytes=100)
    assert reopened.oldest_submit_time_ms() == meta(3).submit_time_ms
    for entry in reopened.recovered:
        reopened.ack(entry)
    assert reopened.oldest_submit_time_ms() is None


def test_fully_acknowledged_sealed_segments_are_deleted(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, segment_bytes=200)
    entries = [outbox.append(meta(n), b"x" * 150) for n in range(3)]
    outbox.commit()
    assert len(segments(tmp_path)) == 3, "one record per segment at this size"
    outbox.ack(entries[0])
    outbox.ack(entries[1])
    assert len(segments(tmp_path)) == 1, "sealed segments are gone, the active one stays"
    assert list(tmp_path.glob(f"*{ACK_SUFFIX}")) == []
    outbox.ack(entries[2])
    assert len(segments(tmp_path)) == 1
    outbox.close()
    assert segments(tmp_path) == [], "close removes an acknowledged active segment"


def test_torn_last_record_is_ignored_and_earlier_records_kept(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    for n in range(3):
        outbox.append(meta(n), b"value-%d" % n * 100)
    outbox.commit()
    outbox.close()
    [segment] = segments(tmp_path)
    size = segment.stat().st_size
    os.truncate(segment, size - 7)  # the last record's tail never reached the disk
    reopened = open_outbox(tmp_path)
    assert [e.meta.job_id for e in reopened.recovered] == ["0", "1"]
    assert reopened.read(reopened.recovered[1]) == b"value-1" * 100


def test_corrupt_record_checksum_ends_the_segment_there(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    entries = [outbox.append(meta(n), b"abcdef" * 10) for n in range(3)]
    outbox.commit()
    outbox.close()
    [segment] = segments(tmp_path)
    with segment.open("r+b") as handle:
        handle.seek(entries[2].value_offset + 3)
        handle.write(b"X")
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["0", "1"]


def test_new_appends_after_a_torn_tail_are_not_lost_behind_it(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.append(meta(0), b"a" * 50)
    outbox.commit()
    outbox.close()
    [segment] = segments(tmp_path)
    with segment.open("ab") as handle:
        handle.write(RECORD_HEADER.pack(b"SXO1", 999, 0)[:7])  # half a header
    reopened = open_outbox(tmp_path)
    reopened.append(meta(1), b"b" * 50)
    reopened.commit()
    reopened.close()
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["0", "1"]


def test_torn_ack_record_is_ignored(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    entries = [outbox.append(meta(n), b"v") for n in range(3)]
    outbox.commit()
    outbox.ack(entries[0])
    outbox.ack(entries[1])
    outbox.close()
    [ack_file] = tmp_path.glob(f"*{ACK_SUFFIX}")
    data = ack_file.read_bytes()
    ack_file.write_bytes(data[:-5])
    assert [e.meta.job_id for e in open_outbox(tmp_path).recovered] == ["1", "2"]


def test_garbage_ack_record_does_not_ack_anything(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    entry = outbox.append(meta(0), b"v")
    outbox.commit()
    outbox.close()
    ack_path = tmp_path / f"{entry.segment:016d}{ACK_SUFFIX}"
    ack_path.write_bytes(struct.pack("<QI", entry.offset, 12345))
    assert len(open_outbox(tmp_path).recovered) == 1


def test_values_beyond_the_in_memory_bound_are_read_back_from_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recent values are handed over from memory up to FRESH_VALUE_BYTES, the rest from disk,
    and a value read once is read from disk the next time (a retry)."""
    monkeypatch.setattr(outbox_module, "FRESH_VALUE_BYTES", 25)
    outbox = open_outbox(tmp_path)
    values = [bytes([n]) * 10 for n in range(4)]
    entries = [outbox.append(meta(n), value) for n, value in enumerate(values)]
    outbox.commit()
    assert [outbox.read(entry) for entry in entries] == values
    assert [outbox.read(entry) for entry in entries] == values
    outbox.close()


def test_has_room_until_the_event_bound(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_events=2)
    first = outbox.append(meta(0), b"v")
    assert outbox.has_room()
    outbox.append(meta(1), b"v")
    assert not outbox.has_room()
    outbox.commit()
    outbox.ack(first)
    assert outbox.has_room()


def test_has_room_until_the_disk_byte_bound(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_bytes=1000)
    entry = outbox.append(meta(0), b"x" * 990)
    assert not outbox.has_room()
    assert outbox.disk_bytes == entry.record_size > 990
    assert outbox.event_bytes == entry.record_size


def test_failed_append_leaves_nothing_behind_and_later_appends_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = open_outbox(tmp_path)
    outbox.append(meta(0), b"kept")
    real_pwrite = os.pwrite

    def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data)[:5], offset)  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(OutboxWriteError, match="No space left"):
        outbox.append(meta(1), b"lost")
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    outbox.append(meta(2), b"after")
    outbox.commit()
    outbox.close()
    reopened = open_outbox(tmp_path)
    assert [(e.meta.job_id, reopened.read(e)) for e in reopened.recovered] == [
        ("0", b"kept"), ("2", b"after")]


def test_recovery_keeps_only_an_index_not_the_event_bytes(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, segment_bytes=4 << 20)
    for n in range(50):
        outbox.append(meta(n), os.urandom(100_000))
    outbox.commit()
    outbox.close()
    reopened = open_outbox(tmp_path)
    assert len(reopened.recovered) == 50
    assert all(not hasattr(e, "value") for e in reopened.recovered)
    assert reopened.recovered[-1].value_size == 100_000


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
       cut=st.integers(min_value=0, max_value=4000))
def test_any_truncation_keeps_exactly_the_records_written_before_the_cut(
        tmp_path_factory: pytest.TempPathFactory, values: list[bytes], cut: int) -> None:
    directory = tmp_path_factory.mktemp("outbox")
    outbox = open_outbox(directory)
    entries = [outbox.append(meta(n), value) for n, value in enumerate(values)]
    outbox.commit()
    outbox.close()
    [segment] = segments(directory)
    size = segment.stat().st_size
    cut = min(cut, size)
    os.truncate(segment, cut)
    intact = [e for e in entries if e.offset + e.record_size <= cut]
    reopened = open_outbox(directory)
    assert [e.meta for e in reopened.recovered] == [e.meta for e in intact]
    assert [reopened.read(e) for e in reopened.recovered] == values[:len(intact)]
