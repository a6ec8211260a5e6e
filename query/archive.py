"""The file-archive backend: sidecars found by the layout's own patterns
(schemas.archive_layout.sidecar_pattern), the files they name read and checked against their
digests. Works with no Elasticsearch at all. Sidecars are hostile input: a path that would
leave the archive root, or pass through a symbolic link, is refused."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from query.backend import BackendError, Progress, newest_first
from query.criteria import (
    Criteria,
    RawNeedles,
    contents_match,
    may_match_raw,
    metadata_matches,
    module_matches,
    needs_contents,
    raw_needles,
)
from query.jobspec import JobSpec
from query.record import (
    JobRecord,
    Metadata,
    environment_from_canonical,
    metadata_of,
    modules_of,
    slurm_environment_entries,
)
from schemas.archive_layout import (
    Layout,
    Role,
    SidecarPattern,
    period_directory,
    sidecar_pattern,
)
from schemas.limits import MAX_EVENT_BYTES
from schemas.model import Scheduler

# consumers.archive.sidecar.FORMAT (tests/unit/query checks they agree): the query package
# may not import the consumers.
SIDECAR_FORMAT = "sarchive-archive-metadata/1"
# A sidecar holds part of one event's metadata, never its script or environment: it is
# smaller than the event, so a larger file is not one of ours and only its head is read.
MAX_SIDECAR_BYTES = MAX_EVENT_BYTES
# A file stored beside a colliding job's: "<name>.<12 hex digits>" (consumers.archive.slots).
_TAG_SUFFIX = re.compile(r"\.[0-9a-f]{12}\Z")
_MAGIC = re.compile(r"[*?\[]")
_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: no mmap per read


def _no_progress(scanned: int, matched: int) -> None:
    """No progress line (not a terminal)."""


def checked_relative_path(path: str) -> tuple[str, ...]:
    """The components of a sidecar's file path if it stays below the root; BackendError if
    it is absolute or has '', '.', '..' or NUL components."""
    components = tuple(path.split("/"))
    if path.startswith("/") or any(c in ("", ".", "..") or "\0" in c for c in components):
        raise BackendError(f"sidecar names a file outside the archive: {path[:200]!r}")
    return components


class FileArchive:
    def __init__(self, root: Path, layout: Layout, zone: tzinfo,
                 progress: Progress = _no_progress) -> None:
        self._root = root
        self._layout = layout
        self._zone = zone
        self._progress = progress

    @property
    def description(self) -> str:
        return f"the file archive {self._root}"

    # -- the protocol ----------------------------------------------------------------------

    def find(self, spec: JobSpec) -> list[JobRecord]:
        records = []
        for path in self._sidecars(sidecar_pattern(self._layout, spec.job_id, spec.cluster),
                                   None):
            document = self._sidecar(path)
            if document is None or document.get("job_id") != spec.job_id:
                continue
            if spec.cluster is not None and document.get("cluster") != spec.cluster:
                continue
            if spec.job_key is not None and document.get("job_key") != spec.job_key:
                continue
            records.append(self._record(document, path))
        return sorted(records, key=lambda r: newest_first(r.submit_time, r.job_key),
                      reverse=True)

    def search(self, criteria: Criteria, limit: int | None) -> list[Metadata]:
        found: list[Metadata] = [metadata_of(d) for d, _ in self._matching(criteria)]
        found.sort(key=lambda m: newest_first(m["submit_time"], m["job_key"]), reverse=True)
        return found if limit is None else found[:limit]

    def module_counts(self, criteria: Criteria) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, modules in self._matching(criteria):
            for module in modules:
                if criteria.module is None or module_matches(criteria.module, module):
                    counts[module] = counts.get(module, 0) + 1
        return counts

    # -- scanning --------------------------------------------------------------------------

    def _matching(self, criteria: Criteria) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
        """(sidecar, modules) of each job matching criteria."""
        matched = 0
        needles = raw_needles(criteria)
        pattern = sidecar_pattern(self._layout, None, criteria.cluster)
        for scanned, path in enumerate(self._sidecars(pattern, self._period_bounds(criteria)),
                                       start=1):
            document = self._sidecar(path, needles)
            if document is not None and metadata_matches(criteria, document):
                modules = document.get("modules")
                if needs_contents(criteria) or not isinstance(modules, list):
                    record = self._record(document, path)
                    if contents_match(criteria, record.script, dict(record.environment),
                                      record.modules):
                        matched += 1
                        yield document, record.modules
                elif contents_match(criteria, b"", {}, modules):
                    matched += 1
                    yield document, tuple(modules)
            self._progress(scanned, matched)

    def _period_bounds(self, criteria: Criteria) -> tuple[str, str] | None:
        """The first and last {period} directory names the date range can touch."""
        period = self._layout.period
        low = "" if criteria.since_ms is None else period_directory(
            period, datetime.fromtimestamp(criteria.since_ms / 1000, tz=self._zone))
        high = "\uffff" if criteria.until_ms is None else period_directory(
            period, datetime.fromtimestamp((criteria.until_ms - 1) / 1000, tz=self._zone))
        return None if criteria.since_ms is None and criteria.until_ms is None else (low, high)

    def _sidecars(self, pattern: SidecarPattern,
                  bounds: tuple[str, str] | None) -> Iterator[str]:
        """The sidecar paths the pattern matches, in name order; a name exactly as the layout
        gives it is checked with one stat, its directory listed only where it exists (for
        the tagged sidecars of jobs stored beside it). Strings, not Paths: a search goes
        through thousands."""
        directories = [self._root]
        *levels, last = pattern.components
        for level, component in enumerate(levels):
            in_range = bounds if level == pattern.period_level else None
            directories = [child for directory in directories
                           for child in self._subdirectories(directory, component, in_range)]
        matches = _name_matcher(last)
        for directory in directories:
            base = str(directory)
            if _MAGIC.search(last):
                yield from (os.path.join(base, name) for name in self._names(directory)
                            if matches(name))
            elif os.path.lexists(os.path.join(base, last)):
                yield os.path.join(base, last)
                yield from (os.path.join(base, name) for name in self._names(directory)
                            if name.startswith(last + ".") and matches(name))

    def _subdirectories(self, directory: Path, component: str,
                        bounds: tuple[str, str] | None) -> list[Path]:
        if not _MAGIC.search(component):
            child = directory / component
            return [child] if child.is_dir() and not child.is_symlink() else []
        try:
            with os.scandir(directory) as entries:
                names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                               and fnmatch.fnmatchcase(e.name, component))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendError(f"cannot list {directory}: {exc.strerror}") from exc
        if bounds is not None:
            names = [n for n in names if bounds[0] <= n <= bounds[1]]
        return [directory / name for name in names]

    def _names(self, directory: Path) -> list[str]:
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendError(f"cannot list {directory}: {exc.strerror}") from exc

    # -- reading ---------------------------------------------------------------------------

    def _read(self, path: str | Path, limit: int | None = None) -> bytes:
        """The file's bytes (its first limit bytes); plain os.read, no file object: a search
        reads thousands of sidecars of about 1 KiB."""
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BackendError(f"{path} is a symbolic link: refused") from exc
            raise BackendError(f"cannot read {path}: {exc.strerror}") from exc
        chunks = []
        left = limit
        try:
            while left is None or left > 0:
                chunk = os.read(descriptor, _READ_SIZE if left is None else min(_READ_SIZE, left))
                if not chunk:
                    break
                chunks.append(chunk)
                left = None if left is None else left - len(chunk)
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(descriptor)
        return b"".join(chunks)

    def _sidecar(self, path: str, needles: RawNeedles = ()) -> dict[str, Any] | None:
        """The sidecar's document, None if path is not one of ours or, by its bytes alone,
        not a job the needles' criteria want."""
        raw = self._read(path, MAX_SIDECAR_BYTES)
        if not may_match_raw(needles, raw):
            return None
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
            return None
        return document

    def _data_file(self, entry: dict[str, Any]) -> bytes:
        components = checked_relative_path(str(entry.get("path", "")))
        path = self._root.joinpath(*components)
        real_root = os.path.realpath(self._root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise BackendError(f"{path} leads outside the archive {self._root}: refused")
        content = self._read(path)
        if hashlib.sha256(content).hexdigest() != entry.get("sha256"):
            raise BackendError(f"{path} does not match the digest its sidecar records")
        return content

    def _record(self, document: dict[str, Any], sidecar: str) -> JobRecord:
        slurm = document.get("scheduler") == Scheduler.SLURM.value
        script = b""
        canonical = b""
        spool_files = []
        for entry in document.get("files") or ():
            content = self._data_file(entry)
            role = entry.get("role")
            if role == Role.SCRIPT.value and not script:
                script = content
                # Slurm's spool copy ends with a NUL, which the archive leaves out.
                content = content + b"\0" if slurm else content
            elif role == Role.ENVIRONMENT.value:
                canonical = slurm_environment_entries(content) if slurm else content
                if document.get("scheduler") == Scheduler.GRIDENGINE.value:
                    continue  # the event's environment, kept beside: not a spool file
            spool_files.append((str(entry.get("spool_name")), content))
        modules = document.get("modules")
        environment = environment_from_canonical(canonical)
        return JobRecord(
            metadata=metadata_of(document), script=script, environment=environment,
            environment_entries=canonical,
            modules=tuple(modules) if isinstance(modules, list)
            else modules_of(script, environment),
            spool_files=tuple(spool_files), location=sidecar)


def _name_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a name is pattern's, or pattern's with a slot tag (stored beside a colliding
    job); the pattern compiled once for a whole scan."""
    plain = re.compile(fnmatch.translate(pattern)).match

    def matches(name: str) -> bool:
        if plain(name):
            return True
        tag = _TAG_SUFFIX.search(name)
        return tag is not None and plain(name[:tag.start()]) is not None

    return matches

