"""Where the producer reads jobs: in reader processes, or inline in the service's thread.

Reading a job's files, building its event and encoding it take about half of the producer's
CPU per job, all of it under Python's GIL; reader processes take that off the service's
thread, so on a busy controller the two halves run on two cores. A reader only reads the
job's spool files and returns plain data (producer.read_outcomes): the outbox, Kafka and every
piece of state stay with the service. Nothing is lost if a reader dies: its jobs are still pending
in the service and come back as READER_LOST, to be read again by a fresh reader.

Each reader has two pipes of its own: requests (a chunk of jobs) in, answers (their outcomes,
in order) out. The service's loop polls the answer pipes with its other descriptors and reads
them itself, so no thread of ours competes for the GIL to shuttle chunks, and each reader has
a few chunks queued so that it never waits for the loop. Readers are spawned (not forked:
librdkafka's threads are running by then) at start(), ignore SIGINT and SIGTERM (the service
decides when to stop), and exit when their request pipe closes: at close(), or when the
service dies, however it dies.

A Slurm job's owner is asked of slurmctld by the reader too (producer.slurm_owners), once for
all the chunks it has been asked at that moment: one squeue per turn, which under load covers
up to QUEUED_JOBS jobs, and never on the service's loop (except with no reader processes,
where everything is read inline).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import select
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from prometheus_client import Counter

from producer.errors import REASON_READER_LOST
from producer.events import EventSettings
from producer.jobs import JobRef
from producer.read_outcomes import ReadFailure, ReadFailureKind, ReadOutcome, read_job
from producer.slurm_owners import UNKNOWN_OWNER, OwnerQuerySettings, SlurmOwners
from schemas.codec import JobEventCodec
from schemas.model import Scheduler

log = logging.getLogger(__name__)

# Jobs per request: enough work to make the pipe round trip cheap per job, small enough that
# a chunk's answer (~40 KB per job) fits the answer pipe and the service keeps the events
# flowing while the reader reads the next chunk.
CHUNK_JOBS = 16
# Jobs a reader may hold at once (asked, not answered), however they are chunked: ~30 ms of
# work queued ahead. Counted in jobs, not chunks: at a steady few hundred jobs/s each turn
# of the loop hands over a chunk of one or two jobs, and a reader limited to a few chunks
# per turn ran one squeue (5-30 ms) per few jobs and fell seconds behind at 500 jobs/s.
# The loop never blocks writing to a reader, which could be blocked writing an answer the
# loop is not reading: a deadlock. So what it asks for must fit the request pipe: 128
# one-job chunks are ~25 KB of requests, under even a default 64 KiB pipe (asked for 1 MiB).
QUEUED_JOBS = 128
# The pipes' capacity (F_SETPIPE_SZ; Linux's default unprivileged maximum): a reader can
# write a whole answer and go on with its next chunk even while the loop is busy.
PIPE_BYTES = 1024 * 1024
STOP_TIMEOUT = 5.0
MAX_INLINE_JOBS = 1 << 30

Outcomes = list[tuple[JobRef, ReadOutcome]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_jobs(jobs: Sequence[JobRef], settings: EventSettings, codec: JobEventCodec,
              owners: SlurmOwners | None) -> list[ReadOutcome]:
    """Read these jobs, their Slurm owners asked in one batch first (none asked without
    owners: each is then UNKNOWN)."""
    found = (owners.owners(job.label for job in jobs if job.scheduler is Scheduler.SLURM)
             if owners is not None else {})
    return [read_job(job, settings, codec, _now_ms(), found.get(job.label, UNKNOWN_OWNER))
            for job in jobs]


@dataclass
class _Reader:
    process: BaseProcess
    requests: Connection
    answers: Connection
    chunks: deque[tuple[JobRef, ...]] = field(default_factory=deque)  # asked, not answered
    # The answer pipe alone, asked "readable?" with one poll(2): Connection.poll() builds a
    # selector for every question, a tenth of the loop's time when it turns per job.
    answer_poll: select.poll = field(default_factory=select.poll)

    def __post_init__(self) -> None:
        self.answer_poll.register(self.answers.fileno(), select.POLLIN)

    @property
    def jobs(self) -> int:
        return sum(map(len, self.chunks))

    def room(self) -> int:
        return QUEUED_JOBS - self.jobs

    def answer_waiting(self) -> bool:
        """An answer can be read (or the reader died: its end of file is readable too)."""
        return bool(self.answer_poll.poll(0))


class JobReaders:
    """`workers` reader processes (0: read inline). The constructor starts nothing.

    owners: how to ask slurmctld for Slurm jobs' owners; None asks nothing (Torque's owner is
    in its spool record)."""

    def __init__(self, settings: EventSettings, workers: int, restarts: Counter,
                 owners: OwnerQuerySettings | None = None) -> None:
        if workers < 0:
            raise ValueError(f"read workers must be 0 or more, not {workers}")
        self.settings = settings
        self.workers = workers
        self.owner_query = owners
        self._owners = SlurmOwners(owners) if owners is not None else None
        self._restarts = restarts
        self._codec = JobEventCodec()
        self._readers: list[_Reader] = []
        self._in_flight = 0
        self._inline: Outcomes = []

    @property
    def in_flight(self) -> int:
        """Jobs handed to readers and not yet answered."""
        return self._in_flight

    def capacity(self) -> int:
        """How many jobs submit() takes now without blocking (inline: any number)."""
        if not self.workers:
            return MAX_INLINE_JOBS
        self.start()
        return sum(reader.room() for reader in self._readers)

    def filenos(self) -> list[int]:
        """Descriptors that become readable when an answer arrives (or a reader dies)."""
        return [reader.answers.fileno() for reader in self._readers]

    def start(self) -> None:
        while len(self._readers) < self.workers:
            self._readers.append(self._spawn())

    def _spawn(self) -> _Reader:
        context = get_context("spawn")
        request_out, request_in = context.Pipe(duplex=False)
        answer_out, answer_in = context.Pipe(duplex=False)
        for end in (answer_in, request_in):
            with contextlib.suppress(OSError):  # a smaller pipe only means more waiting
                fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        process = context.Process(target=_serve,
                                  args=(request_out, answer_in, self.settings, self.owner_query),
                                  name="sarchive-reader", daemon=True)
        process.start()
        # The reader's ends are its own now: closing ours lets each side see the other go.
        request_out.close()
        answer_in.close()
        return _Reader(process, request_in, answer_out)

    def submit(self, jobs: Sequence[JobRef]) -> None:
        """Read these jobs, at most capacity() of them; their outcomes come from results()
        (at once when inline)."""
        if len(jobs) > self.capacity():
            raise ValueError(f"{len(jobs)} jobs submitted, room for {self.capacity()}")
        if not self.workers:
            self._inline.extend(zip(jobs, read_jobs(jobs, self.settings, self._codec,
                                                    self._owners), strict=True))
            return
        first = 0
        while first < len(jobs):  # capacity() held them: some reader always has room
            reader = max(self._readers, key=_Reader.room)
            chunk = tuple(jobs[first:first + min(CHUNK_JOBS, reader.room())])
            first += len(chunk)
            reader.chunks.append(chunk)
            self._in_flight += len(chunk)
            with contextlib.suppress(OSError):  # it died: results() hands its chunks back
                reader.requests.send(chunk)

    def results(self) -> Outcomes:
        """Outcomes that arrived since the last call, in no particular order."""
        outcomes, self._inline = self._inline, []
        for index, reader in enumerate(self._readers):
            try:
                # Readable with nothing asked means end of file: the reader died idle.
                while reader.answer_waiting():
                    answer: list[ReadOutcome] = reader.answers.recv()
                    chunk = reader.chunks.popleft()
                    self._in_flight -= len(chunk)
                    outcomes.extend(zip(chunk, answer, strict=True))
            except (EOFError, OSError) as exc:
                outcomes += self._replace(index, exc)
        return outcomes

    def _replace(self, index: int, exc: BaseException) -> Outcomes:
        """A reader died: its unanswered jobs come back as READER_LOST; a new one starts."""
        reader = self._readers[index]
        reader.process.join(STOP_TIMEOUT)
        log.error("job reader process %s died (exit code %s, %s); starting a new one, its %d"
                  " jobs are read again", reader.process.pid, reader.process.exitcode,
                  type(exc).__name__, reader.jobs)
        self._restarts.inc()
        lost = ReadFailure(ReadFailureKind.READER_LOST, REASON_READER_LOST,
                           f"the reader process died before answering (exit code"
                           f" {reader.process.exitcode})")
        outcomes: Outcomes = [(job, lost) for chunk in reader.chunks for job in chunk]
        self._in_flight -= len(outcomes)
        reader.requests.close()
        reader.answers.close()
        self._readers[index] = self._spawn()
        return outcomes

    def close(self) -> None:
        """Stop the reader processes; answers not collected yet are dropped (their jobs are
        still pending, and read again at the next start)."""
        for reader in self._readers:
            reader.requests.close()  # the reader's next receive ends it
        for reader in self._readers:
            reader.process.join(STOP_TIMEOUT)
            if reader.process.is_alive():
                reader.process.kill()
                reader.process.join()
            reader.answers.close()
        self._readers.clear()
        self._in_flight = 0


def _serve(requests: Connection, answers: Connection, settings: EventSettings,
           owner_query: OwnerQuerySettings | None) -> None:
    """A reader process: answer each chunk of jobs, in order, until the request pipe closes;
    the chunks waiting at once (at most QUEUED_JOBS jobs: the service asks no more) are read
    as one batch (one owner query)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    codec = JobEventCodec()
    owners = SlurmOwners(owner_query) if owner_query is not None else None
    while True:
        try:
            chunks: list[tuple[JobRef, ...]] = [requests.recv()]
            while requests.poll(0):
                chunks.append(requests.recv())
        except EOFError:
            return
        outcomes = read_jobs([job for chunk in chunks for job in chunk], settings, codec,
                             owners)
        try:
            for chunk in chunks:
                answers.send(outcomes[:len(chunk)])
                del outcomes[:len(chunk)]
        except BrokenPipeError:
            return
