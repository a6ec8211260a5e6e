"""The archive as a Sink for the shared consumer runner."""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from consumers.archive.archive_root import check_root, sweep_temporary_files
from consumers.archive.config import ArchiveConfig, parse_mode
from consumers.archive.errors import ArchiveIOError, UnsafeArchiveEntryError
from consumers.archive.slots import Resolution, resolve
from consumers.archive.writer import ArchiveWriter
from consumers.common.metrics import LATENCY_BUCKETS
from consumers.common.sink import Rejection, SinkFatalError, SinkUnavailableError
from schemas.archive_layout import (
    REASON_BAD_TIME,
    REASON_DUPLICATE_PATH,
    REASON_TOO_LONG,
    REASON_UNSAFE,
    ArchivePath,
    UnsafeNameError,
)
from schemas.model import JobEvent

log = logging.getLogger(__name__)

REASON_UNSAFE_ENTRY = "unsafe-archive-entry"
# The archive root missing or not a directory is a configuration mistake, not an outage.
_FATAL_ROOT_ERRORS = (errno.ENOENT, errno.ENOTDIR)
REJECTION_REASONS = (REASON_UNSAFE, REASON_TOO_LONG, REASON_BAD_TIME, REASON_DUPLICATE_PATH,
                     REASON_UNSAFE_ENTRY)
# The errors a full, read-only or failing archive gives, exported at 0 from the start; any
# other errno appears under its own name when it first happens.
IO_ERRORS = ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "unknown")


class ArchiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs_archived = Counter(
            "sarchive_archive_jobs_archived", "Jobs newly made durable in the archive, one per"
            " event whatever its number of files (duplicates not counted)", registry=registry)
        self.files_written = Counter(
            "sarchive_archive_files_written", "Files made durable in the archive",
            registry=registry)
        self.duplicates = Counter(
            "sarchive_archive_duplicates_skipped",
            "Events whose files were all in the archive already (redeliveries): nothing"
            " written", registry=registry)
        self.collisions = Counter(
            "sarchive_archive_id_collisions",
            "Events stored beside another job's files at the same layout path (a reused"
            " job id)", registry=registry)
        self.variants = Counter(
            "sarchive_archive_variants",
            "Events stored beside an earlier, different version of the same job",
            registry=registry)
        self.io_seconds = Histogram(
            "sarchive_archive_io_seconds",
            "Time per batch in each stage of a durable write: write, fsync, link, dirsync",
            ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.io_errors = Counter(
            "sarchive_archive_io_errors",
            "Batch attempts that failed on the file system, by errno (ENOSPC, EACCES,"
            " EROFS, ...); each is retried", ["error"], registry=registry)
        self.temporary_files_swept = Counter(
            "sarchive_archive_temporary_files_swept",
            "Temporary files of an interrupted write removed at start-up", registry=registry)
        for error in IO_ERRORS:
            self.io_errors.labels(error)


class ArchiveSink:
    name = "archive"
    rejection_reasons: tuple[str, ...] = REJECTION_REASONS

    def __init__(self, config: ArchiveConfig, registry: CollectorRegistry) -> None:
        self.layout = config.compiled_layout()
        self.writer = ArchiveWriter(config.archive, parse_mode(config.file_mode, "file_mode"),
                                    parse_mode(config.dir_mode, "dir_mode"))
        self.with_metadata = config.metadata
        self.metrics = ArchiveMetrics(registry)

    def prepare(self) -> None:
        """Check the root and remove temporary files an earlier crash left behind."""
        try:
            check_root(self.writer.root)
            removed = sweep_temporary_files(self.writer.root)
        except ArchiveIOError as exc:
            if exc.code in _FATAL_ROOT_ERRORS:
                raise SinkFatalError(f"{exc} (create the archive directory first)") from exc
            self.metrics.io_errors.labels(exc.code_name).inc()
            raise SinkUnavailableError(str(exc)) from exc
        self.metrics.temporary_files_swept.inc(removed)
        log.info("archive %s ready, layout %r, dates in time zone %s%s", self.writer.root,
                 self.layout.template, self.layout.zone,
                 f"; removed {removed} temporary files of an interrupted write"
                 if removed else "")

    def write_batch(self, events: Sequence[JobEvent]) -> Sequence[Rejection]:
        rejections: list[Rejection] = []
        stored: list[tuple[JobEvent, Resolution]] = []
        try:
            with self.writer.session() as session:
                # Files planned by earlier events of this batch count as present, so two
                # deliveries of one job in one batch are recognised as duplicates too.
                planned: dict[ArchivePath, bytes] = {}

                def read(path: ArchivePath) -> bytes | None:
                    return planned[path] if path in planned else session.read(path)

                for index, event in enumerate(events):
                    try:
                        resolution = resolve(event, self.layout.place(event), read,
                                             self.with_metadata)
                    except UnsafeNameError as exc:
                        rejections.append(Rejection(index, exc.reason, str(exc)))
                        continue
                    except UnsafeArchiveEntryError as exc:
                        rejections.append(Rejection(index, REASON_UNSAFE_ENTRY, str(exc)))
                        continue
                    planned.update(resolution.to_write)
                    stored.append((event, resolution))
                report = session.write(list(planned.items()))
        except ArchiveIOError as exc:
            self.metrics.io_errors.labels(exc.code_name).inc()
            if exc.code == errno.EXDEV:  # no retry can link across file systems
                raise SinkFatalError(
                    f"archive {self.writer.root}: {exc}: a directory below the root is on"
                    " another file system; named temporary files (used where O_TMPFILE is"
                    " refused) need the archive on one file system") from exc
            raise SinkUnavailableError(f"archive {self.writer.root}: {exc}") from exc
        for stage, seconds in report.seconds.items():
            self.metrics.io_seconds.labels(stage).observe(seconds)
        self.metrics.files_written.inc(report.written)
        for event, resolution in stored:
            self._account(event, resolution)
        return rejections

    def _account(self, event: JobEvent, resolution: Resolution) -> None:
        where = resolution.files[0].path
        if resolution.duplicate:
            self.metrics.duplicates.inc()
            log.debug("job %s already archived at %s", event.job_key, where)
            return
        self.metrics.jobs_archived.inc()
        if resolution.collision:
            self.metrics.collisions.inc()
            log.warning("job %s: its layout path is another job's (reused job id?); stored"
                        " beside it as %s", event.job_key, where)
        elif resolution.variant:
            self.metrics.variants.inc()
            log.warning("job %s was archived before with other content; this version is"
                        " stored beside it as %s", event.job_key, where)
        log.info("archived job %s at %s", event.job_key, where)

    def close(self) -> None:
        """Stop the writer's I/O threads; no file stays open between batches."""
        self.writer.close()
