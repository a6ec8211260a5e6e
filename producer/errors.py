"""Named producer errors: per-job spool read failures that never stop the producer."""

from __future__ import annotations

# Reasons double as the metric label of skipped or retried jobs.
REASON_INCOMPLETE = "incomplete"
REASON_VANISHED = "vanished"
REASON_PERMISSION = "permission"
REASON_MALFORMED = "malformed"
REASON_NOT_A_JOB = "not-a-job"
REASON_SYMLINK = "symlink"
REASON_IO = "io"
REASON_READER_LOST = "reader-lost"  # the reader process died while reading the job


class SpoolReadError(Exception):
    """A job's spool files cannot be turned into an event (per-job; never stops the producer)."""

    def __init__(self, job_id: str, reason: str, detail: str) -> None:
        super().__init__(f"job {job_id}: {reason}: {detail}")
        self.job_id = job_id
        self.reason = reason
        self.detail = detail


class JobIncompleteError(SpoolReadError):
    """The scheduler is still writing the job's files: retry later (the caller bounds retries)."""

    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(job_id, REASON_INCOMPLETE, detail)
