"""What a test checks of a topic read back: every job it submitted arrived, and once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from schemas.model import JobEvent


def delivered_once(events: Iterable[JobEvent], job_ids: set[str]) -> dict[str, JobEvent]:
    """The events of these jobs by job id; AssertionError naming the jobs that never arrived
    or arrived more than once (events of other jobs, a shared spool's, are left out)."""
    ours = [event for event in events if event.job_id in job_ids]
    missing = job_ids - {event.job_id for event in ours}
    assert not missing, f"{len(missing)} jobs never arrived: {sorted(missing)[:20]}"
    counts = Counter(event.job_id for event in ours)
    duplicates = sorted(job for job, n in counts.items() if n > 1)
    assert not duplicates, f"published more than once: {duplicates[:20]}"
    return {event.job_id: event for event in ours}
