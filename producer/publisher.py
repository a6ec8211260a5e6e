"""The producer's Kafka side: outbox events to the broker, and their delivery reports back.

Events are produced oldest first within the in-flight bounds (producer.dispatch), always after
the outbox committed them. An acknowledged event leaves the outbox and joins the published-jobs
record; a failed one stays in the outbox and is produced again later; after a fatal error the
Kafka producer is recreated and whatever it held is produced again on the new one. So an event
leaves the outbox only once the broker has acknowledged it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally

from producer.broker_check import BrokerCheck
from producer.delivery import (
    DeliveryFailure,
    DeliveryReport,
    FailureKind,
    KafkaDelivery,
    ProduceRejectedError,
    QueueFullError,
    access_log,
)
from producer.dispatch import Dispatcher
from producer.metrics import ProducerMetrics
from producer.outbox import OutboxEntry, OutboxError
from producer.state_dir import StateDir
from runtime.backoff import backoff_delays
from runtime.kafka import access_failure_message
from schemas.codec import JobEventCodec
from schemas.wire import message_headers, message_key

log = logging.getLogger(__name__)

DELIVERY_POLL_INTERVAL = 0.01  # how often delivery reports are served while messages are out
FAILURE_LOG_INTERVAL = 60.0  # transient delivery failures are summed up this often
# A producer that fails fatally again at once (an idempotent producer refused its producer id
# by ACLs) is recreated after 1 s, then 2, 4, ... up to 30 s: a lasting refusal costs a client
# and a log line every 30 s, not every turn; the first acknowledgement resets the delays.
RESTART_DELAY_FIRST = 1.0
RESTART_DELAY_MAX = 30.0


class Publisher:
    """Publishes the events of `state`'s outbox through `delivery`. The constructor does no
    I/O; start() creates the Kafka producer."""

    def __init__(self, state: StateDir, delivery: KafkaDelivery[OutboxEntry],
                 retry_interval: float, metrics: ProducerMetrics) -> None:
        self.state = state
        self.delivery = delivery
        self.dispatcher: Dispatcher[OutboxEntry] = Dispatcher(retry_interval)
        self.metrics = metrics
        self.headers = message_headers(JobEventCodec())
        # Jobs with an event in the outbox: spool name -> submit time.
        self._queued: dict[str, int] = {}
        self._failures_unlogged: Tally[str] = Tally()
        self._last_failure_log = 0.0
        self._restart_delays = backoff_delays(RESTART_DELAY_FIRST, RESTART_DELAY_MAX)
        self._next_restart = 0.0
        self.broker_check = BrokerCheck(delivery.broker_answers, metrics.broker_up)
        delivery.on_access_failure = self._count_access_failure

    def start(self) -> None:
        self.delivery.start()
        self.broker_check.start()

    def close(self) -> None:
        """Stop the broker check."""
        self.broker_check.stop()

    def replay_outbox(self) -> None:
        """Queue the events the outbox recovered at open, before any new one."""
        outbox = self.state.outbox
        for entry in outbox.recovered:
            self.enqueue(entry)
        if outbox.recovered:
            log.info("replaying %d events (%d bytes) from the outbox", outbox.events,
                     outbox.event_bytes)
        outbox.recovered.clear()

    def enqueue(self, entry: OutboxEntry) -> None:
        """Publish this outbox entry (produced once the outbox has committed it)."""
        self._queued[entry.meta.spool_name] = entry.meta.submit_time_ms
        self.dispatcher.add(entry, entry.value_size)

    def has_queued(self, spool_name: str) -> bool:
        """Whether some submission of the job has an event in the outbox."""
        return spool_name in self._queued

    def is_queued(self, spool_name: str, submit_time_ms: int) -> bool:
        """Whether this submission of the job has an event in the outbox."""
        return self._queued.get(spool_name) == submit_time_ms

    def publish(self, now: float) -> None:
        """One turn: produce what is due, settle the delivery reports that arrived, recreate
        a fatally failed producer. Call after the outbox's commit()."""
        self._dispatch(now)
        self._handle_reports(self.delivery.poll(0), now)
        if self.delivery.fatal_error is not None and now >= self._next_restart:
            self._restart_producer(now)
        self._log_failures(now)

    def next_wakeup(self, now: float) -> float | None:
        """When publish() has something to do next without new entries, if ever."""
        wakeups = [now + DELIVERY_POLL_INTERVAL] if self.dispatcher.in_flight else []
        if self.delivery.fatal_error is not None:
            wakeups.append(self._next_restart)
        retry_at = self.dispatcher.next_wakeup()
        if retry_at is not None:
            wakeups.append(retry_at)
        return min(wakeups, default=None)

    def flush(self, timeout: float, now: float) -> None:
        """Wait up to timeout seconds for the broker's answers to what is in flight
        (librdkafka's flush) and settle them: acknowledged events leave the outbox, the
        others stay in it."""
        self._handle_reports(self.delivery.flush(timeout), now)

    def is_produced_until(self, deadline: float) -> bool:
        """Nothing ready to produce and no retry due before the deadline: what is left is
        in flight, for flush() to wait for."""
        if self.dispatcher.ready:
            return False
        retry_at = self.dispatcher.next_wakeup()
        return retry_at is None or retry_at >= deadline

    def is_settled_until(self, deadline: float) -> bool:
        """Nothing in flight or ready to produce, and no retry due before the deadline."""
        return not self.dispatcher.in_flight and self.is_produced_until(deadline)

    def _dispatch(self, now: float) -> None:
        while self.delivery.fatal_error is None:
            entry = self.dispatcher.next_to_send(now)
            if entry is None:
                return
            try:
                value = self.state.outbox.read(entry)
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
        acknowledged = False
        for report in reports:
            if report.failure is None:
                self._acknowledged(report.token)
                acknowledged = True
            else:
                self._delivery_failed(report.token, report.failure, now)
        if acknowledged:  # an acknowledgement is a broker answering, sooner than the check
            self.metrics.broker_up.set(1)

    def _acknowledged(self, entry: OutboxEntry) -> None:
        if self._next_restart:  # a recreated producer works: the next fatal error starts over
            self._restart_delays = backoff_delays(RESTART_DELAY_FIRST, RESTART_DELAY_MAX)
            self._next_restart = 0.0
        self.dispatcher.acked(entry)
        self.state.outbox.ack(entry)
        meta = entry.meta
        if self.is_queued(meta.spool_name, meta.submit_time_ms):
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
        if failure.access is not None:
            self._count_access_failure(failure)
            access_log.error("%s; the %d events in the outbox stay there and are produced"
                             " again", access_failure_message(
                                 failure.access, failure.code, failure.detail,
                                 f"write topic {self.delivery.topic}"), self.state.outbox.events,
                             extra={"repeat_key": failure.access})
        elif failure.kind in (FailureKind.TOO_LARGE, FailureKind.REJECTED):
            # Not going to heal by itself: loud, per event, with what to change.
            hint = (" (raise the topic's max.message.bytes, see docs/producer.md)"
                    if failure.kind is FailureKind.TOO_LARGE else "")
            log.error("Kafka refused job %s (%d bytes): %s: %s%s; it stays in the outbox and"
                      " is produced again in %.0f s", entry.meta.job_id, entry.value_size,
                      failure.code, failure.detail, hint, delay)
        else:
            self._failures_unlogged[f"{failure.kind.value} ({failure.code})"] += 1

    def _count_access_failure(self, failure: DeliveryFailure) -> None:
        assert failure.access is not None
        self.metrics.kafka_access_failures.labels(failure.access).inc()

    def _log_failures(self, now: float) -> None:
        if not self._failures_unlogged or now - self._last_failure_log < FAILURE_LOG_INTERVAL:
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
        delay = next(self._restart_delays)
        self._next_restart = now + delay
        log.error("recreating the Kafka producer after a fatal error (%s: %s); the outbox"
                  " keeps every event; if the new one fails too, the next in %.0f s",
                  failure.code, failure.detail, delay)
        self._handle_reports(self.delivery.restart(), now)
        self.dispatcher.requeue_in_flight()
