"""The one protocol both backends implement, so that every subcommand gives the same answer
from Elasticsearch and from the file archive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from query.criteria import Criteria
from query.jobspec import JobSpec
from query.record import JobRecord, Metadata

# Called as (sidecars read, jobs matched) while a backend scans: the archive's progress line.
Progress = Callable[[int, int], None]


class BackendError(Exception):
    """The backend cannot answer: unreachable, refusing, or holding something unreadable.
    The message names the URL or directory and why."""


def newest_first(submit_time: int, job_key: str) -> tuple[int, str]:
    """The sort key of results on both backends: newest first, job key descending to break
    ties (Elasticsearch: es_query.SORT); use with reverse=True."""
    return submit_time, job_key


class Backend(Protocol):
    @property
    def description(self) -> str:
        """What was searched, for messages: 'Elasticsearch http://...' or 'the file archive
        /srv/...'."""

    def find(self, spec: JobSpec) -> list[JobRecord]:
        """Every archived job SPEC names, newest first."""

    def search(self, criteria: Criteria, limit: int | None) -> list[Metadata]:
        """The metadata of the jobs matching criteria, newest first, at most limit."""

    def module_counts(self, criteria: Criteria) -> dict[str, int]:
        """For each module, how many jobs matching criteria load it."""
