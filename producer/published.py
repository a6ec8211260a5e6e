"""Jobs the broker already acknowledged, kept across restarts so rescans skip them.

A job is identified by its spool name plus its submit time (the mtime of its script, written
once at submission), so a later job reusing the name is not mistaken for the old one. The
state is an append-only file of JSON lines, `[name, submit_time_ms, job_key]` to add and
`[name]` to forget, rewritten compactly (temporary file, fsync, rename) when it has grown to
twice the live set. Appends are not fsynced: losing the tail in a crash only means
republishing a few jobs, which consumers absorb (they are idempotent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.durability import fsync_directory

log = logging.getLogger(__name__)

COMPACT_SLACK = 10_000  # lines tolerated beyond twice the live set before a rewrite


@dataclass(frozen=True, slots=True)
class PublishedJob:
    submit_time_ms: int
    job_key: str


class PublishedJobs:
    """The set of acknowledged jobs by spool name; use open() to load it from its file."""

    def __init__(self, path: Path, jobs: dict[str, PublishedJob], lines: int) -> None:
        self.path = path
        self._jobs = jobs
        self._lines = lines
        self._handle = path.open("a", encoding="utf-8")

    @classmethod
    def open(cls, path: Path) -> PublishedJobs:
        jobs: dict[str, PublishedJob] = {}
        lines = 0
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                lines += 1
                _apply(jobs, line, path, number)
        return cls(path, jobs, lines)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def is_published(self, name: str, submit_time_ms: int) -> bool:
        job = self._jobs.get(name)
        return job is not None and job.submit_time_ms == submit_time_ms

    def add(self, name: str, submit_time_ms: int, job_key: str) -> None:
        self._jobs[name] = PublishedJob(submit_time_ms, job_key)
        self._write([name, submit_time_ms, job_key])

    def forget(self, name: str) -> None:
        if self._jobs.pop(name, None) is not None:
            self._write([name])

    def retain(self, names: Iterable[str]) -> None:
        """Keep only these names (the jobs a full scan found in the spool)."""
        keep = set(names)
        for name in [n for n in self._jobs if n not in keep]:
            self.forget(name)

    def flush(self) -> None:
        self._handle.flush()
        if self._lines > 2 * len(self._jobs) + COMPACT_SLACK:
            self._compact()

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def _write(self, record: list[object]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._lines += 1

    def _compact(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for name, job in self._jobs.items():
                record = [name, job.submit_time_ms, job.job_key]
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._handle.close()
        os.replace(temporary, self.path)
        fsync_directory(self.path.parent)
        self._handle = self.path.open("a", encoding="utf-8")
        self._lines = len(self._jobs)


def _apply(jobs: dict[str, PublishedJob], line: bytes, path: Path, number: int) -> None:
    try:
        record = json.loads(line)
        if len(record) == 1:
            jobs.pop(str(record[0]), None)
        else:
            name, submit_time_ms, job_key = record
            jobs[str(name)] = PublishedJob(int(submit_time_ms), str(job_key))
    except (ValueError, TypeError) as exc:
        # A torn last line after a crash; at worst those jobs are published once more.
        log.warning("ignoring unreadable line %d of %s: %s", number, path, exc)

