"""The producer's loop: spool changes -> job events -> outbox (fsync) -> Kafka -> acknowledged.

One thread owns all state; reading and encoding jobs runs in reader processes, librdkafka's
network I/O in its own threads. Each turn it
waits on the inotify descriptor and a wake-up pipe (signals, stop requests) with a timeout
from the nearest timer, then:

1. applies the spool changes: new or touched jobs become pending, removed ones are forgotten,
   a lost-event signal has already been turned into a full rescan by the watcher;
2. hands the pending jobs that are due to the reader processes (producer.reader_processes),
   while the outbox has room, and takes their answers: a complete job's event is appended to the
   outbox; an incomplete one is re-checked later, up to --ready-timeout;
3. commits the outbox: one fdatasync for everything appended in this turn (group commit);
4. produces outbox entries, oldest first, within the in-flight bounds;
5. serves librdkafka's delivery reports: an acknowledged event leaves the outbox and joins the
   published-jobs state; a failed one is produced again later.

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
from collections import Counter as Tally
from collections.abc import Callable
from types import FrameType

from confluent_kafka import Producer
from inotify_simple import INotify
from prometheus_client import CollectorRegistry

from producer.config import ProducerConfig, kafka_producer_properties
from producer.delivery import (
    DeliveryFailure,
    DeliveryReport,
    FailureKind,
    KafkaDelivery,
    ProduceRejectedError,
    ProducerFactory,
    QueueFullError,
)
from producer.dispatch import Dispatcher
from producer.errors import REASON_VANISHED
from producer.events import EventSettings
from producer.jobs import JobRef
from producer.metrics import ProducerMetrics
from producer.outbox import OutboxEntry, OutboxError, OutboxWriteError
from producer.read_outcomes import ReadEvent, ReadFailure, ReadFailureKind
from producer.reader_processes import JobReaders
from producer.state_dir import StateDir
from producer.tracker import PendingJobs
from producer.watcher import InotifyLike, SpoolChanges, SpoolWatcher
from runtime.logs import ReopenableFileHandler
from schemas.codec import JobEventCodec
from schemas.model import Scheduler
from schemas.version import VERSION
from schemas.wire import message_headers, message_key

log = logging.getLogger(__name__)

JOBS_PER_TURN = 256  # jobs read per turn: bounds one group commit and keeps the loop lively
IDLE_WAKEUP = 1.0
DELIVERY_POLL_INTERVAL = 0.01  # how often delivery reports are served while messages are out
SPOOL_POLL_INTERVAL = 1.0  # how often a missing spool directory is looked for
DEGRADED_RESCAN_INTERVAL = 5.0  # full rescans while some directory has no watch
OUTBOX_RETRY_INTERVAL = 5.0  # pause after an outbox write error before reading jobs again
REPEAT_LOG_INTERVAL = 60.0


class ProducerService:
    """Owns the watcher, the outbox and the Kafka producer. The constructor does no I/O."""

    def __init__(self, config: ProducerConfig, registry: CollectorRegistry, *,
                 inotify_factory: Callable[[], InotifyLike] = INotify,
                 producer_factory: ProducerFactory = Producer,
                 log_handler: ReopenableFileHandler | None = None) -> None:
        self.config = config
        self.metrics = ProducerMetrics(registry)
        self.codec = JobEventCodec()
        self.headers = message_headers(self.codec)
        self.watcher = SpoolWatcher(Scheduler(config.scheduler), config.spool_dir,
                                    config.torque_subdirs, inotify_factory)
        self.pending: PendingJobs[JobRef] = PendingJobs(config.ready_timeout)
        self.dispatcher: Dispatcher[OutboxEntry] = Dispatcher(config.retry_interval)
        self.delivery: KafkaDelivery[OutboxEntry] = KafkaDelivery(
            kafka_producer_properties(config), config.topic, producer_factory)
        self.event_settings = EventSettings(
            cluster=config.cluster, env_policy=config.env_policy(),
            max_script_bytes=config.max_script_bytes, host=socket.gethostname(),
            version=VERSION)
        self.readers = JobReaders(self.event_settings, config.read_workers,
                                  self.metrics.reader_restarts)
        self._log_handler = log_handler
        self.state = StateDir(config.state_dir, config.outbox_max_bytes,
                              config.outbox_max_events)
        # Jobs with an event in the outbox: spool name -> submit time.
        self._queued: dict[str, int] = {}
        self._signals = 0
        self._last_signal = 0
        self._hangup = False
        self._wake_read: int | None = None
        self._wake_write: int | None = None
        self._next_spool_check = 0.0
        self._waiting_for_spool_logged = False
        self._next_degraded_rescan = 0.0
        self._outbox_blocked_until = 0.0
        self._outbox_full = False
        self._last_full_log = 0.0
        self._failures_unlogged: Tally[str] = Tally()
        self._last_failure_log = 0.0

    # ------------------------------------------------------------------ life cycle

    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code."""
        self.state.open()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        restore = self._install_signals() if install_signals else None
        try:
            self.delivery.start()
            self.readers.start()
            self._replay()
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

    def _replay(self) -> None:
        outbox = self.state.outbox
        for entry in outbox.recovered:
            self._enqueue(entry)
        if outbox.recovered:
            log.info("replaying %d events (%d bytes) from the outbox", outbox.events,
                     outbox.event_bytes)
        outbox.recovered.clear()

    def _close(self) -> None:
        self.watcher.close()
        self.state.close()
        for fd in (self._wake_read, self._wake_write):
            if fd is not None:
                os.close(fd)
        self._wake_read = self._wake_write = None

    def _install_signals(self) -> Callable[[], None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT,
                                                     signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        assert self._wake_write is not None
        previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(previous_wakeup)
            for number, handler in previous.items():
                signal.signal(number, handler)
        return restore

    # Signal handlers only set flags; set_wakeup_fd wakes the loop's select().
    def _on_stop_signal(self, number: int, _frame: FrameType | None) -> None:
        self._signals += 1
        self._last_signal = number

    def _on_hangup(self, _number: int, _frame: FrameType | None) -> None:
        self._hangup = True

    def _wake(self) -> None:
        if self._wake_write is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"\0")

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> int:
        while self._signals == 0:
            self._reopen_log_if_asked()
            now = time.monotonic()
            self._start_watcher_if_due(now)
            changes = self.watcher.read()
            if self.watcher.degraded and now >= self._next_degraded_rescan:
                self._next_degraded_rescan = now + DEGRADED_RESCAN_INTERVAL
                changes.merge(self.watcher.rescan())
                self.metrics.rescans.labels("watch-limit").inc()
            self._apply(changes, now)
            self._work(now)
            self._wait(self._wait_timeout(time.monotonic()))
        return self._shutdown()

    def _work(self, now: float) -> None:
        """Steps 2-5 of a turn; shared by the loop and the shutdown."""
        self._read_due_jobs(now)
        self._take_read_outcomes(now)
        self.state.outbox.commit()
        self._dispatch(now)
        self._handle_reports(self.delivery.poll(0), now)
        if self.delivery.fatal_error is not None:
            self._restart_producer(now)
        self.state.published.flush()
        self._log_failures(now)
        self._update_gauges()

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.config.shutdown_timeout
        self.watcher.close()  # no new spool events from here on
        log.info("stopping: finishing %d seen jobs and delivering %d outbox events, for at"
                 " most %.0f s", len(self.pending), self.state.outbox.events,
                 self.config.shutdown_timeout)
        while self._signals < 2:
            now = time.monotonic()
            self._work(now)
            if now >= deadline or self._drained(deadline):
                break
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
        if (len(self.pending) or self.readers.in_flight or self.dispatcher.in_flight
                or self.dispatcher.ready):
            return False
        retry_at = self.dispatcher.next_wakeup()
        return retry_at is None or retry_at >= deadline

    def _wait_timeout(self, now: float) -> float:
        wakeups = [now + IDLE_WAKEUP]
        if self.dispatcher.in_flight:
            wakeups.append(now + DELIVERY_POLL_INTERVAL)
        retry_at = self.dispatcher.next_wakeup()
        if retry_at is not None:
            wakeups.append(retry_at)
        if self._can_read_jobs(now):
            recheck_at = self.pending.next_wakeup()
            if recheck_at is not None:
                wakeups.append(recheck_at)
        elif self._outbox_blocked_until > now:
            wakeups.append(self._outbox_blocked_until)
        # Otherwise the outbox is full: only an acknowledgement (polled for while messages are
        # in flight) or a retry (its own wakeup) can make room.
        if self._signals == 0:  # the spool is no longer watched once stopping
            if not self.watcher.started:
                wakeups.append(self._next_spool_check)
            if self.watcher.degraded:
                wakeups.append(self._next_degraded_rescan)
        return max(0.0, min(wakeups) - now)

    def _wait(self, timeout: float) -> None:
        # poll(), not select(): descriptor numbers may pass select's limit of 1024.
        poller = select.poll()
        for fd in (self._wake_read, self.watcher.fileno(), *self.readers.filenos()):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(timeout * 1000)}
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)

    def _reopen_log_if_asked(self) -> None:
        if not self._hangup:
            return
        self._hangup = False
        if self._log_handler is not None:
            self._log_handler.reopen()
            log.info("log file reopened (SIGHUP)")

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
            return
        self._waiting_for_spool_logged = False
        log.info("watching %s spool %s: %d jobs in it", self.config.scheduler,
                 self.config.spool_dir, len(changes.touched))
        self.metrics.rescans.labels("start").inc()
        self._apply(changes, now)

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
        for job in changes.gone:
            # A job being read is left to its reader's answer: a complete event is kept.
            if job in self.pending and not self.pending.is_reading(job):
                self._give_up(job, REASON_VANISHED,
                              "removed from the spool before its files were complete")
            published.forget(job.name)
        for job in changes.touched:
            self._touch(job, counted_if_known=changes.full_scan)
        if changes.full_scan and not changes.spool_lost:
            published.retain(job.name for job in changes.touched)
        if changes.spool_lost:
            for job in self.pending.jobs():
                self.pending.done(job)
            self._next_spool_check = now

    def _touch(self, job: JobRef, counted_if_known: bool) -> None:
        if job not in self.pending:
            if self._known(job.name, job.submit_time_ms()):
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

    def _known(self, name: str, submit_time_ms: int | None) -> bool:
        if submit_time_ms is None:
            return False
        return (self.state.published.is_published(name, submit_time_ms)
                or self._queued.get(name) == submit_time_ms)

    def _can_read_jobs(self, now: float) -> bool:
        if now < self._outbox_blocked_until:
            return False
        has_room = self.state.outbox.has_room()
        if has_room != (not self._outbox_full):
            self._outbox_full = not has_room
            if self._outbox_full:
                self.metrics.outbox_full_events.inc()
                self._log_outbox_full(now)
            else:
                log.info("outbox has room again: reading the waiting jobs")
        elif self._outbox_full and now - self._last_full_log >= REPEAT_LOG_INTERVAL:
            self._log_outbox_full(now)
        return has_room

    def _log_outbox_full(self, now: float) -> None:
        self._last_full_log = now
        outbox = self.state.outbox
        log.error("OUTBOX FULL: %d events, %d bytes on disk (bounds: %d events, %d bytes);"
                  " %d new jobs wait in the spool until the broker acknowledges events",
                  outbox.events, outbox.disk_bytes, outbox.max_events, outbox.max_bytes,
                  len(self.pending))

    def _read_due_jobs(self, now: float) -> None:
        outbox = self.state.outbox
        # Every job handed over may become an event: keep the event bound exact. The byte
        # bound is checked before jobs are handed over, so the events of the jobs in flight
        # (at most the readers' capacity) may take the outbox past it.
        room = outbox.max_events - outbox.events - self.readers.in_flight
        if room <= 0 or not self._can_read_jobs(now):
            return
        jobs = self.pending.due(now, min(room, JOBS_PER_TURN, self.readers.capacity()))
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
        if now < self._outbox_blocked_until:
            self._unread(job)
            return
        try:
            entry = self.state.outbox.append(read.meta, read.value)
        except OutboxWriteError as exc:
            self.metrics.outbox_write_errors.inc()
            self._outbox_blocked_until = now + OUTBOX_RETRY_INTERVAL
            log.error("%s; job %s waits in the spool, retrying in %.0f s", exc, job.label,
                      OUTBOX_RETRY_INTERVAL)
            self._unread(job)
            return
        self.pending.done(job)
        self.watcher.release(job)
        self._enqueue(entry)
        self.metrics.redacted_values.inc(read.redacted_values)
        if read.truncated is not None:
            self.metrics.scripts_truncated.inc()
            log.warning("job %s: script of %d bytes sent truncated to %d bytes (sha256 %s)",
                        read.meta.job_id, read.truncated.size, read.truncated.carried,
                        read.truncated.sha256)

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

    # ------------------------------------------------------------------ Kafka side

    def _enqueue(self, entry: OutboxEntry) -> None:
        self._queued[entry.meta.spool_name] = entry.meta.submit_time_ms
        self.dispatcher.add(entry, entry.value_size)

    def _dispatch(self, now: float) -> None:
        outbox = self.state.outbox
        while self.delivery.fatal_error is None:
            entry = self.dispatcher.next_to_send(now)
            if entry is None:
                return
            try:
                value = outbox.read(entry)
            except (OSError, OutboxError) as exc:
                log.error("cannot read job %s back from the outbox: %s", entry.meta.job_id, exc)
                self.dispatcher.failed(entry, now)
                continue
            try:
                self.delivery.produce(message_key(entry.meta.job_key), value, self.headers,
                                      entry)
            except QueueFullError:
                self.dispatcher.unsent(entry)
                return
            except ProduceRejectedError as exc:
                self.dispatcher.sent(entry)
                self._delivery_failed(entry, exc.failure, now)
                continue
            self.dispatcher.sent(entry)

    def _handle_reports(self, reports: list[DeliveryReport[OutboxEntry]], now: float) -> None:
        for report in reports:
            if report.failure is None:
                self._acknowledged(report.token)
            else:
                self._delivery_failed(report.token, report.failure, now)

    def _acknowledged(self, entry: OutboxEntry) -> None:
        self.dispatcher.acked(entry)
        self.state.outbox.ack(entry)
        meta = entry.meta
        if self._queued.get(meta.spool_name) == meta.submit_time_ms:
            del self._queued[meta.spool_name]
        self.state.published.add(meta.spool_name, meta.submit_time_ms, meta.job_key)
        latency = max(0.0, time.time() - meta.submit_time_ms / 1000)
        self.metrics.jobs_published.inc()
        self.metrics.ack_latency.observe(latency)
        log.info("job %s archived: cluster=%s bytes=%d latency=%.3fs", meta.job_id,
                 meta.cluster, entry.value_size, latency,
                 extra={"cluster": meta.cluster, "job_id": meta.job_id,
                        "job_key": meta.job_key, "bytes": entry.value_size,
                        "latency_seconds": round(latency, 3)})

    def _delivery_failed(self, entry: OutboxEntry, failure: DeliveryFailure,
                         now: float) -> None:
        delay = self.dispatcher.failed(entry, now)
        self.metrics.delivery_failures.labels(failure.kind.value).inc()
        if failure.kind in (FailureKind.TOO_LARGE, FailureKind.REJECTED):
            # Not going to heal by itself: loud, per event, with what to change.
            hint = (" (raise the topic's max.message.bytes, see docs/producer.md)"
                    if failure.kind is FailureKind.TOO_LARGE else "")
            log.error("Kafka refused job %s (%d bytes): %s: %s%s; it stays in the outbox and"
                      " is produced again in %.0f s", entry.meta.job_id, entry.value_size,
                      failure.code, failure.detail, hint, delay)
        else:
            self._failures_unlogged[f"{failure.kind.value} ({failure.code})"] += 1

    def _log_failures(self, now: float) -> None:
        if not self._failures_unlogged or now - self._last_failure_log < REPEAT_LOG_INTERVAL:
            return
        self._last_failure_log = now
        summary = ", ".join(f"{count} {kind}" for kind, count in self._failures_unlogged.items())
        self._failures_unlogged.clear()
        log.warning("deliveries failed: %s; the events stay in the outbox (%d events) and are"
                    " produced again", summary, self.state.outbox.events)

    def _restart_producer(self, now: float) -> None:
        failure = self.delivery.fatal_error
        assert failure is not None
        self.metrics.producer_restarts.inc()
        log.error("recreating the Kafka producer after a fatal error (%s: %s); the outbox"
                  " keeps every event", failure.code, failure.detail)
        self._handle_reports(self.delivery.restart(), now)
        self.dispatcher.requeue_in_flight()

    # ------------------------------------------------------------------ helpers

    def _update_gauges(self) -> None:
        outbox = self.state.outbox
        self.metrics.outbox_events.set(outbox.events)
        self.metrics.outbox_bytes.set(outbox.event_bytes)
        self.metrics.outbox_disk_bytes.set(outbox.disk_bytes)
        self.metrics.outbox_full.set(int(self._outbox_full))
        self.metrics.watches.set(self.watcher.watch_count)
        self.metrics.pending_jobs.set(len(self.pending))
