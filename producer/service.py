"""The producer's loop: spool changes -> job events -> outbox (fsync) -> Kafka -> acknowledged.

One thread owns all state; reading and encoding jobs runs in reader processes, librdkafka's
network I/O in its own threads. This module is the loop and the spool side; the state
directory (producer.state_dir), the back-pressure (producer.outbox_gate) and the Kafka side
(producer.publisher) are pieces of their own. Each turn it waits on the inotify descriptor and
a wake-up pipe (signals, stop requests) with a timeout from the nearest timer, then:

1. applies the spool changes: new or touched jobs become pending, removed ones are forgotten,
   a lost-event signal has already been turned into a full rescan by the watcher;
2. hands the pending jobs that are due to the reader processes (producer.reader_processes),
   while the outbox gate lets it, and takes their answers: a complete job's event is appended
   to the outbox; an incomplete one is re-checked later, up to --ready-timeout;
3. commits the outbox: one fdatasync for everything appended in this turn (group commit);
4. publishes: produces outbox entries, oldest first, within the in-flight bounds, and serves
   librdkafka's delivery reports: an acknowledged event leaves the outbox and joins the
   published-jobs record; a failed one is produced again later;
5. updates the outbox gate with the outbox as the turn leaves it.

So an event is always durable before it is produced, and leaves the outbox only once the
broker has acknowledged it; a restart replays the outbox first and rescans the spool, skipping
the jobs that were acknowledged (or are still in the outbox) already.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

from confluent_kafka import Producer
from inotify_simple import INotify
from prometheus_client import CollectorRegistry

from producer.config import ProducerConfig
from producer.delivery import KafkaDelivery, ProducerFactory
from producer.errors import REASON_VANISHED
from producer.events import EventSettings
from producer.jobs import JobRef
from producer.metrics import ProducerMetrics
from producer.outbox import OutboxWriteError
from producer.outbox_gate import OutboxGate
from producer.publisher import Publisher
from producer.read_outcomes import ReadEvent, ReadFailure, ReadFailureKind
from producer.reader_processes import JobReaders
from producer.slurm_owners import OwnerQuerySettings
from producer.state_dir import StateDir
from producer.tracker import PendingJobs
from producer.watcher import InotifyLike, SpoolChanges, SpoolWatcher
from runtime.backoff import backoff_delays
from runtime.logs import LogReopener, ReopenableFileHandler
from runtime.systemd_notify import SystemdNotifier
from schemas.model import Scheduler
from schemas.version import VERSION

log = logging.getLogger(__name__)

JOBS_PER_TURN = 256  # jobs read per turn: bounds one group commit and keeps the loop lively
IDLE_WAKEUP = 1.0
SPOOL_POLL_INTERVAL = 1.0  # how often a missing spool directory is looked for
# A refused directory watch is tried again after 0.1 s, doubling up to 5 s: a hash directory
# opened up a moment after its creation is followed at once, and a lasting refusal (the
# watch limit) costs a try every 5 s, well within the minutes a finished job stays spooled.
WATCH_RETRY_FIRST = 0.1
WATCH_RETRY_MAX = 5.0
FLUSH_SLICE = 0.1  # the shutdown's flush is cut in slices so that a second signal is served


class ProducerService:
    """Owns the watcher, the readers, the state directory and the publisher; `kafka_properties`
    are librdkafka's (producer.config.kafka_producer_properties). The constructor does no
    I/O."""

    def __init__(self, config: ProducerConfig, registry: CollectorRegistry,
                 kafka_properties: Mapping[str, str], *,
                 inotify_factory: Callable[[], InotifyLike] = INotify,
                 producer_factory: ProducerFactory = Producer,
                 log_handler: ReopenableFileHandler | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        # The composition root passes the one systemd started us with; none by default.
        self.notifier = notifier if notifier is not None else SystemdNotifier(environ={})
        self.metrics = ProducerMetrics(registry)
        self.watcher = SpoolWatcher(Scheduler(config.scheduler), config.spool_dir,
                                    config.torque_subdirs, inotify_factory)
        self.pending: PendingJobs[JobRef] = PendingJobs(config.ready_timeout)
        self.state = StateDir(config.state_dir, config.outbox_max_bytes,
                              config.outbox_max_events)
        self.gate = OutboxGate(self.metrics.outbox_full_events)
        self.publisher = Publisher(
            self.state, KafkaDelivery(kafka_properties, config.topic, producer_factory),
            config.retry_interval, self.metrics)
        self.event_settings = EventSettings(
            cluster=config.cluster, env_policy=config.env_policy(),
            max_script_bytes=config.max_script_bytes, host=socket.gethostname(),
            version=VERSION)
        owner_query = (OwnerQuerySettings(config.squeue, config.owner_query_timeout)
                       if config.scheduler == Scheduler.SLURM.value else None)
        self.readers = JobReaders(self.event_settings, config.read_workers,
                                  self.metrics.reader_restarts, owner_query)
        self._log_handler = log_handler
        self._signals = 0
        self._last_signal = 0
        self._wake_read: int | None = None
        self._wake_write: int | None = None
        self._next_spool_check = 0.0
        self._waiting_for_spool_logged = False
        self._watch_retry_delays: Iterator[float] | None = None
        self._next_watch_retry = 0.0
        # The descriptors the loop waits on, registered once while they stay the same.
        self._poller: tuple[tuple[int, ...], select.poll] | None = None

    # ------------------------------------------------------------------ life cycle

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code."""
        self.state.open()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        restore = self._install_signals() if install_signals else None
        try:
            self.publisher.start()
            self.readers.start()
            self.publisher.replay_outbox()
            return self._loop()
        finally:
            if restore is not None:
                restore()
            self.readers.close()
            self._close()

    def request_stop(self) -> None:
        """Stop as SIGTERM would (for callers that run the service in a thread)."""
        self._signals += 1
        self._wake()

    def _close(self) -> None:
        self.notifier.close()
        self.publisher.close()
        self.watcher.close()
        self.state.close()
        for fd in (self._wake_read, self._wake_write):
            if fd is not None:
                os.close(fd)
        self._wake_read = self._wake_write = None

    def _install_signals(self) -> Callable[[], None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        reopener = LogReopener(self._log_handler)  # SIGHUP, outside the handler
        reopener.install()
        assert self._wake_write is not None
        previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(previous_wakeup)
            reopener.uninstall()
            for number, handler in previous.items():
                signal.signal(number, handler)
        return restore

    # The stop signals' handler only sets flags; set_wakeup_fd wakes the loop's select().
    def _on_stop_signal(self, number: int, _frame: FrameType | None) -> None:
        self._signals += 1
        self._last_signal = number

    def _wake(self) -> None:
        if self._wake_write is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"\0")

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> int:
        while self._signals == 0:
            now = time.monotonic()
            self.notifier.watchdog(now)
            self._start_watcher_if_due(now)
            changes = self.watcher.read()
            self._retry_watches_if_due(now, changes)
            self._apply(changes, now)
            self._work(now)
            self._wait(self._wait_timeout(time.monotonic()))
        return self._shutdown()

    def _work(self, now: float) -> None:
        """Steps 2-5 of a turn; shared by the loop and the shutdown."""
        self._read_due_jobs(now)
        self._take_read_outcomes(now)
        self.state.outbox.commit()
        self.publisher.publish(now)
        self.state.outbox.flush_acks()
        self.state.published.flush()
        # The outbox as this turn leaves it: what the wait and the next turn's reads go by.
        self.gate.update(now, self.state.outbox, len(self.pending))
        self._update_gauges()

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.config.shutdown_timeout
        self.watcher.close()  # no new spool events from here on
        self.notifier.stopping(f"stopping: finishing {len(self.pending)} seen jobs and"
                               f" delivering {self.state.outbox.events} outbox events")
        log.info("stopping: finishing %d seen jobs and delivering %d outbox events, for at"
                 " most %.0f s", len(self.pending), self.state.outbox.events,
                 self.config.shutdown_timeout)
        while self._signals < 2:
            now = time.monotonic()
            self.notifier.watchdog(now)
            self._work(now)
            if now >= deadline or self._drained(deadline):
                break
            if self._only_acknowledgements_awaited(deadline):
                # Everything is produced: librdkafka's flush sends what lingers and waits
                # for the broker's answers; what stays unanswered stays in the outbox.
                self.publisher.flush(min(deadline - now, FLUSH_SLICE), now)
            else:
                self._wait(min(deadline - now, self._wait_timeout(now)))
        outbox = self.state.outbox
        if self._signals >= 2:
            log.warning("second signal: exiting at once; %d events stay in the outbox and %d"
                        " jobs in the spool for the next start", outbox.events,
                        len(self.pending))
            return 128 + self._last_signal if self._last_signal else 1
        log.info("stopped: %d events stay in the outbox and %d jobs in the spool for the"
                 " next start", outbox.events, len(self.pending))
        return 0

    def _drained(self, deadline: float) -> bool:
        if len(self.pending) or self.readers.in_flight:
            return False
        return self.publisher.is_settled_until(deadline)

    def _only_acknowledgements_awaited(self, deadline: float) -> bool:
        if len(self.pending) or self.readers.in_flight:
            return False
        return self.publisher.is_produced_until(deadline)

    def _wait_timeout(self, now: float) -> float:
        wakeups = [now + IDLE_WAKEUP]
        watchdog_at = self.notifier.next_watchdog()
        if watchdog_at is not None:
            wakeups.append(watchdog_at)
        publish_at = self.publisher.next_wakeup(now)
        if publish_at is not None:
            wakeups.append(publish_at)
        if self.gate.can_read(now, self.state.outbox):
            recheck_at = self.pending.next_wakeup()
            # Jobs due now that no reader can take yet wait for an answer (the readers'
            # descriptors wake the loop) or for room in the outbox (an acknowledgement, on
            # the publisher's wake-ups): a wake-up now would spin the loop until then.
            if recheck_at is not None and (recheck_at > now or self._can_hand_over()):
                wakeups.append(recheck_at)
        else:
            # A full outbox makes room only through acknowledgements, which the publisher's
            # wake-ups serve; a write error's pause ends at the gate's.
            gate_at = self.gate.next_wakeup(now)
            if gate_at is not None:
                wakeups.append(gate_at)
        if self._signals == 0:  # the spool is no longer watched once stopping
            if not self.watcher.started:
                wakeups.append(self._next_spool_check)
            if self.watcher.degraded:
                wakeups.append(self._next_watch_retry)
        return max(0.0, min(wakeups) - now)

    def _wait(self, timeout: float) -> None:
        # poll(), not select(): descriptor numbers may pass select's limit of 1024.
        fds = tuple(fd for fd in (self._wake_read, self.watcher.fileno(),
                                  *self.readers.filenos()) if fd is not None)
        if self._poller is None or self._poller[0] != fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            self._poller = (fds, poller)
        ready = {fd for fd, _ in self._poller[1].poll(timeout * 1000)}
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)

    # ------------------------------------------------------------------ spool side

    def _start_watcher_if_due(self, now: float) -> None:
        if self.watcher.started or now < self._next_spool_check:
            return
        self._next_spool_check = now + SPOOL_POLL_INTERVAL
        changes = self.watcher.start()
        if changes is None:
            if not self._waiting_for_spool_logged:
                log.warning("spool directory %s does not exist (yet): waiting for it",
                            self.config.spool_dir)
                self._waiting_for_spool_logged = True
                # Started, as the docs promise: waiting for the spool is the service's work.
                self.notifier.ready(f"waiting for spool directory {self.config.spool_dir}")
            return
        self._waiting_for_spool_logged = False
        log.info("watching %s spool %s: %d jobs in it", self.config.scheduler,
                 self.config.spool_dir, len(changes.touched))
        self.notifier.ready(f"watching {self.config.scheduler} spool {self.config.spool_dir}")
        self.metrics.rescans.labels("start").inc()
        self._apply(changes, now)

    def _retry_watches_if_due(self, now: float, changes: SpoolChanges) -> None:
        """Retry refused directory watches on a back-off timer, from the turn they failed
        in until none is left."""
        if not self.watcher.degraded:
            self._watch_retry_delays = None
            return
        if self._watch_retry_delays is None:
            self._watch_retry_delays = backoff_delays(WATCH_RETRY_FIRST, WATCH_RETRY_MAX)
        elif now < self._next_watch_retry:
            return
        else:
            changes.merge(self.watcher.retry_watches())
        self._next_watch_retry = now + next(self._watch_retry_delays)

    def _apply(self, changes: SpoolChanges, now: float) -> None:
        if changes.overflow:
            self.metrics.inotify_overflows.inc()
            self.metrics.rescans.labels("overflow").inc()
        if changes.watch_failures:
            self.metrics.watch_failures.labels("directory").inc(changes.watch_failures)
        for rejected in changes.rejected:
            self.metrics.jobs_failed.labels(rejected.reason).inc()
            log.warning("ignoring %s in the spool: %s", rejected.path, rejected.reason)
        published = self.state.published
        # Touched before gone: a batch holding both for one job saw it written (a Grid Engine
        # record rewritten at the job's end) and then removed; the other way round, a job
        # already published would be forgotten first and then taken for a new one.
        for job in changes.touched:
            self._touch(job, counted_if_known=changes.full_scan)
        for job in changes.updated:
            if job in self.pending:
                self.pending.touch(job)
        for job in changes.gone:
            # A job being read is left to its reader's answer: a complete event is kept.
            if job in self.pending and not self.pending.is_reading(job):
                self._give_up(job, REASON_VANISHED,
                              "removed from the spool before its files were complete")
            published.forget(job.name)
        if changes.full_scan and not changes.spool_lost:
            published.retain(job.name for job in changes.touched)
        if changes.spool_lost:
            for job in self.pending.jobs():
                self.pending.done(job)
            self._next_spool_check = now

    def _touch(self, job: JobRef, counted_if_known: bool) -> None:
        if job not in self.pending:
            if self._known(job):
                if counted_if_known:
                    self.metrics.jobs_skipped.inc()
                return
            self.metrics.jobs_detected.inc()
        self.pending.touch(job)
        # Watch before the read: a close-write after this point cannot be missed.
        if not self.watcher.watch_job(job):
            self.metrics.watch_failures.labels("job").inc()
            log.warning("no inotify watch for job %s (watch limit reached): re-checking it"
                        " on a timer", job.label)

    def _known(self, job: JobRef) -> bool:
        """Whether this submission of the job was acknowledged or is in the outbox already.

        Its submit time is looked at only for a name seen before, its cheap probable value
        first: a Grid Engine record has to be decoded for the exact one (about 1 ms, which a
        start-up scan of a large spool would pay per job on the loop). A known name whose
        record was removed meanwhile is a job on its way out (a rewrite then a removal), not
        a new one."""
        name = job.name
        if name not in self.state.published and not self.publisher.has_queued(name):
            return False
        probable = job.probable_submit_time_ms()
        if probable is not None and self._recorded(name, probable):
            return True
        submit_time_ms = job.submit_time_ms()
        if submit_time_ms is None:
            return job.removed_from_spool()
        return self._recorded(name, submit_time_ms)

    def _recorded(self, name: str, submit_time_ms: int) -> bool:
        return (self.state.published.is_published(name, submit_time_ms)
                or self.publisher.is_queued(name, submit_time_ms))

    def _room(self) -> int:
        """Jobs that may be handed to the readers now. Every job handed over may become an
        event: keep the event bound exact. The byte bound is checked before jobs are handed
        over (the gate), so the events of the jobs in flight (at most the readers' capacity)
        may take the outbox past it."""
        outbox = self.state.outbox
        return min(outbox.max_events - outbox.events - self.readers.in_flight,
                   self.readers.capacity())

    def _can_hand_over(self) -> bool:
        return self._room() > 0

    def _read_due_jobs(self, now: float) -> None:
        room = self._room()
        if room <= 0 or not self.gate.can_read(now, self.state.outbox):
            return
        jobs = self.pending.due(now, min(room, JOBS_PER_TURN))
        for job in jobs:
            self.pending.reading(job)
        if jobs:
            self.readers.submit(jobs)

    def _take_read_outcomes(self, now: float) -> None:
        for job, outcome in self.readers.results():
            if isinstance(outcome, ReadEvent):
                self._keep(job, outcome, now)
            else:
                self._read_failed(job, outcome, now)

    def _keep(self, job: JobRef, read: ReadEvent, now: float) -> None:
        """Append a read job's event to the outbox (even if the job left the spool
        meanwhile: the event is complete)."""
        if not self.gate.can_keep(now):
            self._unread(job)
            return
        try:
            entry = self.state.outbox.append(read.meta, read.value)
        except OutboxWriteError as exc:
            self.metrics.outbox_write_errors.inc()
            self.gate.pause_after_write_error(now)
            log.error("%s; job %s waits in the spool, retrying in %.0f s", exc, job.label,
                      self.gate.write_error_pause)
            self._unread(job)
            return
        self.pending.done(job)
        self.watcher.release(job)
        self.publisher.enqueue(entry)
        self.metrics.redacted_values.inc(read.redacted_values)
        if not read.owner_known:
            self.metrics.owners_unknown.inc()
        if read.truncated is not None:
            self.metrics.scripts_truncated.inc()
            log.warning("job %s: script of %d bytes sent truncated to %d bytes (sha256 %s)",
                        read.meta.job_id, read.truncated.size, read.truncated.carried,
                        read.truncated.sha256)
        if read.record_withheld is not None:
            self.metrics.records_withheld.inc()
            log.warning("job %s: event sent without its Grid Engine record, whose masking"
                        " could not be verified: %s", read.meta.job_id, read.record_withheld,
                        extra={"job_id": read.meta.job_id})

    def _unread(self, job: JobRef) -> None:
        if job in self.pending:
            self.pending.again(job)

    def _read_failed(self, job: JobRef, failure: ReadFailure, now: float) -> None:
        if job not in self.pending:
            return  # vanished or given up while its read was under way
        if failure.kind in (ReadFailureKind.INCOMPLETE, ReadFailureKind.READER_LOST):
            if not self.pending.incomplete(job, now):
                what = ("still incomplete" if failure.kind is ReadFailureKind.INCOMPLETE
                        else "no answer from a reader")
                self._give_up(job, failure.reason, f"{what} after"
                              f" {self.config.ready_timeout:g} s: {failure.detail}")
            return
        if failure.kind is ReadFailureKind.UNEXPECTED:
            log.error("job %s (%s): cannot build its event:\n%s", job.label, job.directory,
                      failure.detail.rstrip())
            self._give_up(job, failure.reason, failure.detail.rstrip().rsplit("\n", 1)[-1])
            return
        self._give_up(job, failure.reason, failure.detail)

    def _give_up(self, job: JobRef, reason: str, detail: str) -> None:
        self.pending.done(job)
        self.watcher.release(job)
        self.metrics.jobs_failed.labels(reason).inc()
        log.warning("job %s (%s) not archived: %s: %s", job.label, job.directory, reason,
                    detail, extra={"job_id": job.label, "reason": reason})

    # ------------------------------------------------------------------ helpers

    def _update_gauges(self) -> None:
        outbox = self.state.outbox
        self.metrics.outbox_events.set(outbox.events)
        self.metrics.outbox_bytes.set(outbox.event_bytes)
        self.metrics.outbox_disk_bytes.set(outbox.disk_bytes)
        self.metrics.outbox_full.set(int(self.gate.full))
        self.metrics.watches.set(self.watcher.watch_count)
        self.metrics.pending_jobs.set(len(self.pending))
        self.metrics.spool_present.set(int(self.watcher.started))
        oldest_ms = outbox.oldest_submit_time_ms()
        self.metrics.outbox_oldest_age.set(
            0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000))
