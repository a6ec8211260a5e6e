"""Where the producer reads jobs: in reader processes, or inline in the service's thread.

Reading a job's files, building its event and encoding it take about half of the producer's
CPU per job, all of it under Python's GIL; reader processes take that off the service's
thread, so on a busy controller the two halves run on two cores. A reader only reads the
job's spool files and returns plain data (producer.reading): the outbox, Kafka and every piece
of state stay with the service. Nothing is lost if a reader dies: its jobs are still pending
in the service and come back as READER_LOST, to be read again by a fresh reader.

Readers are spawned (not forked: librdkafka's threads are running by then) at start(), ignore
SIGINT and SIGTERM (the service decides when to stop, and stops them at close()), and are
killed by the kernel when the service dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from prometheus_client import Counter

from producer.events import EventSettings
from producer.jobs import JobRef
from producer.reading import ReadFailure, ReadFailureKind, ReadOutcome, read_job
from schemas.codec import JobEventCodec

log = logging.getLogger(__name__)

REASON_READER_LOST = "reader-lost"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Jobs per request to a reader: small enough that the service appends the first events while
# the reader reads the next ones, large enough to make the pipe round trip cheap per job.
CHUNK_JOBS = 16

Outcomes = list[tuple[JobRef, ReadOutcome]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class JobReaders:
    """`workers` reader processes (0: read inline). The constructor starts nothing."""

    def __init__(self, settings: EventSettings, workers: int, wake: Callable[[], None],
                 restarts: Counter) -> None:
        if workers < 0:
            raise ValueError(f"read workers must be 0 or more, not {workers}")
        self.settings = settings
        self.workers = workers
        self._wake = wake
        self._restarts = restarts
        self._codec = JobEventCodec()
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight = 0
        self._inline: Outcomes = []
        # Filled by the pool's result thread, drained by the service's thread.
        self._answered: deque[tuple[Sequence[JobRef], Future[list[ReadOutcome]]]] = deque()
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Jobs handed to readers and not yet answered."""
        return self._in_flight

    def start(self) -> None:
        if self.workers and self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_start_reader,
                                             initargs=(self.settings, os.getpid()))

    def submit(self, jobs: Sequence[JobRef]) -> None:
        """Read these jobs; their outcomes come from results() (at once when inline)."""
        if not self.workers:
            self._inline.extend((job, read_job(job, self.settings, self._codec, _now_ms()))
                                for job in jobs)
            return
        self.start()
        assert self._pool is not None  # start() made it
        for first in range(0, len(jobs), CHUNK_JOBS):
            chunk = tuple(jobs[first:first + CHUNK_JOBS])
            try:
                future = self._pool.submit(_read_chunk, chunk)
            except BrokenProcessPool as exc:
                failed: Future[list[ReadOutcome]] = Future()
                failed.set_exception(exc)
                future = failed
            self._in_flight += len(chunk)
            future.add_done_callback(functools.partial(self._answer, chunk))

    def _answer(self, chunk: Sequence[JobRef], future: Future[list[ReadOutcome]]) -> None:
        """Runs in the pool's result thread: queue the answer, wake the service's loop."""
        with self._lock:
            self._answered.append((chunk, future))
        self._wake()

    def results(self) -> Outcomes:
        """Outcomes that arrived since the last call, in no particular order."""
        outcomes, self._inline = self._inline, []
        with self._lock:
            answered = list(self._answered)
            self._answered.clear()
        broken: BaseException | None = None
        for chunk, future in answered:
            self._in_flight -= len(chunk)
            try:
                outcomes.extend(zip(chunk, future.result(), strict=True))
                continue
            except BrokenProcessPool as exc:
                broken = exc
                detail = f"the reader process died before answering: {exc}"
            except Exception as exc:  # the request or its answer did not cross the pipe
                detail = f"the reader could not answer: {exc!r}"
            lost = ReadFailure(ReadFailureKind.READER_LOST, REASON_READER_LOST, detail)
            outcomes.extend((job, lost) for job in chunk)
        if broken is not None and self._pool is not None:
            log.error("a job reader process died (%s); starting a new one, its jobs are read"
                      " again", broken)
            self._restarts.inc()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return outcomes

    def close(self) -> None:
        """Stop the reader processes; answers not collected yet are dropped (their jobs are
        still pending, and read again at the next start)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# --------------------------------------------------------------------------- reader side

_reader: tuple[EventSettings, JobEventCodec] | None = None


def _start_reader(settings: EventSettings, service_pid: int) -> None:
    global _reader  # noqa: PLW0603 - one reader per process: its settings, set once at start
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Die with the service even when it is killed outright: the pool's pipes stay open in
    # the reader itself, so it would never see them close.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != service_pid:  # it died before the prctl took effect
        os._exit(1)
    _reader = (settings, JobEventCodec())


def _read_chunk(jobs: Sequence[JobRef]) -> list[ReadOutcome]:
    assert _reader is not None  # the pool's initializer ran
    settings, codec = _reader
    return [read_job(job, settings, codec, _now_ms()) for job in jobs]
