"""The on-disk outbox: every event is durable here before it is produced, until acknowledged.

Layout, under the outbox directory:

    <n>.seg  segment n: records appended one after another, never rewritten
    <n>.ack  acknowledgements of segment n's records: fixed-size (offset, crc32) entries

A segment record is `magic "SXO1" | u32 body length | u32 crc32(body)` followed by the body
`u32 meta length | meta (JSON) | event value` (little-endian). Reading stops at the first record
whose header or checksum does not hold, which is what a write torn by a crash leaves at the
end of a segment: the records before it are kept. Appends go to the active segment with plain
writes; commit() makes them durable with one fdatasync per turn of the service loop (group
commit), which the service calls before producing any of them. Acknowledgements are written
without fsync, those of one turn together (flush_acks): losing one in a crash means producing
that event again, which is harmless because consumers are idempotent. A segment is deleted
once it is no longer the active one and all its records are acknowledged; on open every
remaining unacknowledged record is returned for replay. Besides an index of records, memory
holds only the values of the latest appends not read yet (up to FRESH_VALUE_BYTES): the
service produces those a moment after the commit, and reading them back from disk cost as
much as appending them. Everything else is read back from disk when it is produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from producer.event_meta import EventMeta
from runtime.durability import fsync_directory
from runtime.errors import ServiceFatalError

log = logging.getLogger(__name__)

RECORD_MAGIC = b"SXO1"
RECORD_HEADER = struct.Struct("<4sII")
META_LENGTH = struct.Struct("<I")
ACK_RECORD = struct.Struct("<QI")
SEGMENT_SUFFIX = ".seg"
ACK_SUFFIX = ".ack"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
FRESH_VALUE_BYTES = 16 * 1024 * 1024  # a full turn of jobs (JOBS_PER_TURN) of average size


class OutboxError(Exception):
    """The outbox could not do what was asked."""


class OutboxWriteError(OutboxError):
    """An event could not be appended (disk full, I/O error); nothing of it was kept."""


class OutboxSyncError(OutboxError, ServiceFatalError):
    """fsync failed: whether appended events are durable is unknown. Fatal for the service,
    which restarts and finds those jobs in the spool again."""


_META_FIELDS = dataclasses.fields(EventMeta)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    segment: int
    offset: int
    record_size: int
    value_size: int
    meta: EventMeta

    @property
    def value_offset(self) -> int:
        return self.offset + self.record_size - self.value_size


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    fd: int
    size: int
    # Unacknowledged records: offset -> the job's submit time (ms), in append order.
    live: dict[int, int] = field(default_factory=dict)
    sealed: bool = True
    dirty: bool = False
    ack_fd: int | None = None
    acks: bytearray = field(default_factory=bytearray)  # ack records not written yet

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(ACK_SUFFIX)


class Outbox:
    """Open with Outbox.open(); the events to replay are then in `recovered`."""

    def __init__(self, directory: Path, max_bytes: int, max_events: int,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.segment_bytes = segment_bytes
        self.recovered: list[OutboxEntry] = []
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._live_bytes = 0
        self._live_events = 0
        self._directory_dirty = False
        # Values of recent appends, by (segment, offset), until read() takes them.
        self._fresh: dict[tuple[int, int], bytes] = {}
        self._fresh_bytes = 0

    @classmethod
    def open(cls, directory: Path, max_bytes: int, max_events: int,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Outbox:
        outbox = cls(directory, max_bytes, max_events, segment_bytes)
        directory.mkdir(parents=True, exist_ok=True)
        outbox._recover()
        return outbox

    # -- state

    @property
    def events(self) -> int:
        """Events not yet acknowledged."""
        return self._live_events

    @property
    def event_bytes(self) -> int:
        """Bytes of the records not yet acknowledged."""
        return self._live_bytes

    @property
    def disk_bytes(self) -> int:
        """Bytes of all segment files: what --outbox-max-bytes bounds."""
        return sum(s.size for s in self._segments.values())

    def oldest_submit_time_ms(self) -> int | None:
        """The submit time of the job whose event is first in the outbox, unacknowledged
        (None: the outbox is empty). Segments and their records are in append order, so
        this looks at the first live record only."""
        for segment in self._segments.values():
            if segment.live:
                return next(iter(segment.live.values()))
        return None

    def has_room(self) -> bool:
        return self._live_events < self.max_events and self.disk_bytes < self.max_bytes

    # -- writing

    def append(self, meta: EventMeta, value: bytes) -> OutboxEntry:
        """Write one event; it is durable only after the next commit()."""
        segment = self._writable_segment()
        meta_bytes = json.dumps(_meta_fields(meta), separators=(",", ":")).encode()
        body_head = META_LENGTH.pack(len(meta_bytes)) + meta_bytes
        body_size = len(body_head) + len(value)
        checksum = zlib.crc32(value, zlib.crc32(body_head))
        record = RECORD_HEADER.pack(RECORD_MAGIC, body_size, checksum) + body_head + value
        try:
            _pwrite_all(segment.fd, record, segment.size)
        except OSError as exc:
            # Cut the partial record off, and append to a fresh segment from now on in case
            # that failed too: a record after garbage would be unreachable on recovery.
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            self._seal(segment)
            raise OutboxWriteError(
                f"cannot append to outbox segment {segment.path}: {exc.strerror}") from exc
        entry = OutboxEntry(segment.number, segment.size, len(record), len(value), meta)
        segment.size += len(record)
        segment.live[entry.offset] = meta.submit_time_ms
        segment.dirty = True
        self._live_bytes += entry.record_size
        self._live_events += 1
        if self._fresh_bytes + len(value) <= FRESH_VALUE_BYTES:
            self._fresh[(entry.segment, entry.offset)] = value
            self._fresh_bytes += len(value)
        return entry

    def commit(self) -> None:
        """Make every append so far durable: one fdatasync per segment written to."""
        try:
            for segment in self._segments.values():
                if segment.dirty:
                    os.fdatasync(segment.fd)
                    segment.dirty = False
            if self._directory_dirty:
                fsync_directory(self.directory)
                self._directory_dirty = False
        except OSError as exc:
            raise OutboxSyncError(f"fsync in outbox {self.directory} failed: {exc}") from exc

    def read(self, entry: OutboxEntry) -> bytes:
        value = self._fresh.pop((entry.segment, entry.offset), None)
        if value is not None:
            self._fresh_bytes -= len(value)
            return value
        segment = self._segments[entry.segment]
        value = os.pread(segment.fd, entry.value_size, entry.value_offset)
        if len(value) != entry.value_size:
            raise OutboxError(f"outbox segment {segment.path} is shorter than its index says")
        return value

    def ack(self, entry: OutboxEntry) -> None:
        """The broker acknowledged the event: drop it (and its segment once fully acked)."""
        segment = self._segments.get(entry.segment)
        if segment is None or entry.offset not in segment.live:
            return
        del segment.live[entry.offset]
        self._live_bytes -= entry.record_size
        self._live_events -= 1
        if segment.sealed and not segment.live:
            self._delete(segment)
            return
        offset = struct.pack("<Q", entry.offset)
        segment.acks += ACK_RECORD.pack(entry.offset, zlib.crc32(offset))

    def flush_acks(self) -> None:
        """Write the acknowledgements since the last call: one write per segment."""
        for segment in self._segments.values():
            if not segment.acks:
                continue
            with contextlib.suppress(OSError):  # a lost ack record only means one re-delivery
                if segment.ack_fd is None:
                    segment.ack_fd = os.open(
                        segment.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                        0o600)
                os.write(segment.ack_fd, segment.acks)
            segment.acks.clear()

    def close(self) -> None:
        self.flush_acks()
        for segment in list(self._segments.values()):
            if not segment.live:
                self._delete(segment)
                continue
            if segment.ack_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(segment.ack_fd)
                os.close(segment.ack_fd)
            os.close(segment.fd)
        self._segments.clear()
        self._active = None

    # -- internals

    def _writable_segment(self) -> _Segment:
        if self._active is not None and self._active.size < self.segment_bytes:
            return self._active
        if self._active is not None:
            self._seal(self._active)
        number = max(self._segments, default=0) + 1
        path = self.directory / f"{number:016d}{SEGMENT_SUFFIX}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OutboxWriteError(f"cannot create outbox segment {path}: {exc.strerror}") \
                from exc
        segment = _Segment(number, path, fd, 0, sealed=False)
        self._segments[number] = segment
        self._active = segment
        self._directory_dirty = True
        return segment

    def _seal(self, segment: _Segment) -> None:
        segment.sealed = True
        if self._active is segment:
            self._active = None
        if not segment.live and not segment.dirty:
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        del self._segments[segment.number]
        if self._active is segment:
            self._active = None
        os.close(segment.fd)
        if segment.ack_fd is not None:
            os.close(segment.ack_fd)
        # The segment goes first: an .ack left behind by a crash is removed on the next open.
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            segment.ack_path.unlink()

    def _recover(self) -> None:
        for ack_path in self.directory.glob(f"*{ACK_SUFFIX}"):
            if not ack_path.with_suffix(SEGMENT_SUFFIX).exists():
                ack_path.unlink()
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                number = int(path.stem)
            except ValueError:
                log.warning("ignoring %s: not an outbox segment name", path)
                continue
            entries, size = _read_segment(path, number)
            acked = _read_acks(path.with_suffix(ACK_SUFFIX))
            live = [e for e in entries if e.offset not in acked]
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            segment = _Segment(number, path, fd, os.fstat(fd).st_size,
                               live={e.offset: e.meta.submit_time_ms for e in live})
            self._segments[number] = segment
            if not live:
                self._delete(segment)
                continue
            if size != segment.size:
                log.warning("outbox segment %s: ignoring %d bytes after offset %d (a record"
                            " torn by a crash); the %d records before it are kept",
                            path, segment.size - size, size, len(entries))
            self.recovered.extend(live)
            self._live_events += len(live)
            self._live_bytes += sum(e.record_size for e in live)


def _read_segment(path: Path, number: int) -> tuple[list[OutboxEntry], int]:
    """The segment's intact records, and the offset where intact records end."""
    entries: list[OutboxEntry] = []
    file_size = path.stat().st_size
    offset = 0
    with path.open("rb") as handle:
        while True:
            header = handle.read(RECORD_HEADER.size)
            if len(header) < RECORD_HEADER.size:
                break
            magic, body_size, checksum = RECORD_HEADER.unpack(header)
            if magic != RECORD_MAGIC or body_size > file_size - offset - RECORD_HEADER.size:
                break
            body = handle.read(body_size)
            if zlib.crc32(body) != checksum:
                break
            meta = _parse_meta(body)
            if meta is None:
                break
            meta_size = META_LENGTH.size + META_LENGTH.unpack_from(body)[0]
            record_size = RECORD_HEADER.size + body_size
            entries.append(OutboxEntry(number, offset, record_size, body_size - meta_size, meta))
            offset += record_size
    return entries, offset


def _meta_fields(meta: EventMeta) -> dict[str, object]:
    # dataclasses.asdict deep-copies every field: a measurable cost at thousands of events/s.
    return {f.name: getattr(meta, f.name) for f in _META_FIELDS}


def _parse_meta(body: bytes) -> EventMeta | None:
    try:
        (length,) = META_LENGTH.unpack_from(body)
        return EventMeta(**json.loads(body[META_LENGTH.size:META_LENGTH.size + length]))
    except (struct.error, ValueError, TypeError):
        return None


def _read_acks(path: Path) -> set[int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    acked: set[int] = set()
    # A torn last ack record is shorter than ACK_RECORD.size: iter_unpack needs whole ones.
    whole = len(data) - len(data) % ACK_RECORD.size
    for offset, checksum in ACK_RECORD.iter_unpack(data[:whole]):
        if zlib.crc32(struct.pack("<Q", offset)) == checksum:
            acked.add(offset)
    return acked


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
