"""A Slurm job's owner as slurmctld holds it: asked with squeue in batches, named through NSS.

The spool's environment is the submitter's claim (`sbatch --export=USER=bob` makes any job
claim bob); the uid slurmctld holds for the job is not. A reader process asks for the owners
of all the jobs it reads in one turn with one squeue (a few ms against a local slurmctld,
whatever the batch size), off the service's loop, and remembers each job's owner: a job read
again (incomplete files, a restart) costs no second query. A job whose owner cannot be
established (squeue failed or timed out, the job is gone from slurmctld, NSS does not know
its uid) gets OwnerSource.UNKNOWN: never the environment's claim.

Parsing is pure (parse_squeue_uids); running squeue and NSS are the thin adapters at the end.
"""

from __future__ import annotations

import logging
import pwd
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.model import OwnerSource

log = logging.getLogger(__name__)

# %F is the array's job id for an array task and the job's own id otherwise: the id the
# spool's job.<id> directory carries. %U is the numeric uid slurmctld holds for the job.
SQUEUE_FORMAT = "%F|%U"
# squeue answers a single unknown id (but not a list of them) with this and exit code 1.
_INVALID_JOB_ID = "Invalid job id specified"
# Ids per squeue call: bounds the command line (ids are short: ~40 KB at most).
MAX_BATCH_IDS = 4096
# Owners remembered per reader process (the oldest forgotten first).
CACHED_OWNERS = 65536
# A squeue that keeps failing (slurmctld down, SLURM_CONF missing) fails every batch: warn at
# most this often, with the count, rather than thousands of times a second.
WARNING_INTERVAL = 60.0


class OwnerQueryError(Exception):
    """squeue could not tell the owners of a batch (not started, timed out, failed)."""


@dataclass(frozen=True, slots=True)
class JobOwner:
    """The owner an event carries: name (None where NSS does not know the uid), uid, source."""

    name: str | None
    uid: int | None
    source: OwnerSource


UNKNOWN_OWNER = JobOwner(None, None, OwnerSource.UNKNOWN)


@dataclass(frozen=True)
class OwnerQuerySettings:
    squeue: str = "squeue"
    timeout: float = 10.0


def squeue_command(squeue: str, job_ids: Sequence[str]) -> list[str]:
    """squeue listing the given jobs of every user and partition, in any state it still holds."""
    return [squeue, "--noheader", "--all", "--states=all", f"--format={SQUEUE_FORMAT}",
            f"--jobs={','.join(job_ids)}"]


def parse_squeue_uids(text: str) -> dict[str, int]:
    """job id -> uid from squeue's SQUEUE_FORMAT lines; an array's tasks give one entry.

    Raises OwnerQueryError on a line that is not `<id>|<uid>`: output we do not understand
    establishes nobody."""
    uids: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, bar, uid = line.strip().partition("|")
        if not (bar and job_id.isdigit() and uid.isdigit()):
            raise OwnerQueryError(f"unexpected squeue line {line!r}")
        uids[job_id] = int(uid)
    return uids


QueryRunner = Callable[[Sequence[str], float], str]
NameOfUid = Callable[[int], str | None]


class SlurmOwners:
    """The owners of batches of Slurm jobs, remembered per job. The constructor runs nothing."""

    def __init__(self, settings: OwnerQuerySettings, run: QueryRunner | None = None,
                 name_of_uid: NameOfUid | None = None) -> None:
        self.settings = settings
        self._run = run if run is not None else run_squeue
        self._name_of_uid = name_of_uid if name_of_uid is not None else nss_name_of_uid
        self._known: dict[str, JobOwner] = {}
        self.queries = 0
        self.failures = 0
        self._unreported = 0
        self._next_warning = 0.0

    def owners(self, job_ids: Iterable[str]) -> Mapping[str, JobOwner]:
        """Each job's owner; UNKNOWN_OWNER for the jobs squeue does not establish."""
        wanted = list(dict.fromkeys(job_ids))
        missing = [job_id for job_id in wanted if job_id not in self._known]
        for first in range(0, len(missing), MAX_BATCH_IDS):
            self._ask(missing[first:first + MAX_BATCH_IDS])
        return {job_id: self._known.get(job_id, UNKNOWN_OWNER) for job_id in wanted}

    def _ask(self, job_ids: Sequence[str]) -> None:
        self.queries += 1
        try:
            uids = parse_squeue_uids(self._run(squeue_command(self.settings.squeue, job_ids),
                                               self.settings.timeout))
        except OwnerQueryError as exc:
            self.failures += 1
            self._unreported += len(job_ids)
            now = time.monotonic()
            if now >= self._next_warning:
                log.warning("the owners of %d Slurm jobs are unknown (administrators only see"
                            " them; next warning in %.0f s at the earliest): %s",
                            self._unreported, WARNING_INTERVAL, exc)
                self._unreported = 0
                self._next_warning = now + WARNING_INTERVAL
            return
        for job_id in job_ids:
            uid = uids.get(job_id)
            if uid is None:
                continue  # gone from slurmctld: unknown, and asked again if read again
            if len(self._known) >= CACHED_OWNERS:
                del self._known[next(iter(self._known))]
            self._known[job_id] = JobOwner(self._name_of_uid(uid), uid, OwnerSource.SCHEDULER)


def run_squeue(command: Sequence[str], timeout: float) -> str:
    """squeue's standard output; an unknown single job id is an empty answer."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise OwnerQueryError(f"{command[0]} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise OwnerQueryError(f"{command[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        if _INVALID_JOB_ID in done.stderr:
            return ""
        raise OwnerQueryError(f"{command[0]} exited with {done.returncode}:"
                              f" {done.stderr.strip()[:300]}")
    return done.stdout


def nss_name_of_uid(uid: int) -> str | None:
    """The user name the host's NSS gives uid; None where it knows none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
