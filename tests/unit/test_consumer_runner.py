"""The consumer runner: its pure parts (which offsets a batch commits, how long it backs off,
what a batch takes), then the whole loop on a scripted consumer, dead-letter producer and sink
(tests/unit/conftest.py: runner_harness), on a fake clock that moves only when the consumer
waits: retries while paused, refused commits, revokes, dead-letter failures and every way of
stopping, without Kafka and without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

import confluent_kafka
import pytest

from consumers.common.dlq import HEADER_REASON, HEADER_SOURCE_OFFSET
from consumers.common.runner import commit_positions, take_batch
from consumers.common.sink import SinkUnavailableError
from runtime.backoff import backoff_delays
from runtime.config import ConfigError
from runtime.exits import EXIT_FAILURE, EXIT_OK
from runtime.kafka import client_error_kind

TOPIC = "jobs"  # the harness's topic
P0, P1 = (TOPIC, 0), (TOPIC, 1)
MakeHarness = Callable[..., Any]


def test_commit_position_is_one_past_the_highest_offset_per_partition() -> None:
    assert commit_positions([("t", 0, 5), ("t", 1, 7), ("t", 0, 9), ("t", 0, 6),
                             ("u", 0, 0)]) == {("t", 0): 10, ("t", 1): 8, ("u", 0): 1}


def test_nothing_handled_commits_nothing() -> None:
    assert commit_positions([]) == {}


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert list(islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


class ScriptedConsume:
    """consume(num_messages, timeout) over a fixed list of already fetched messages;
    records every call."""

    def __init__(self, fetched: list[str]) -> None:
        self.fetched = fetched
        self.calls: list[tuple[int, float]] = []

    def __call__(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append((num_messages, timeout))
        taken, self.fetched = self.fetched[:num_messages], self.fetched[num_messages:]
        return taken


def batch(consume: ScriptedConsume, max_messages: int) -> list[str]:
    """take_batch(consume, max_messages, 0.5) over strings: it only counts and concatenates
    what consume() returns, so strings stand in for confluent_kafka messages."""
    return take_batch(consume, max_messages, 0.5)  # type: ignore[arg-type,return-value]  # see above


def test_a_batch_is_what_has_arrived_without_waiting_for_it_to_fill() -> None:
    consume = ScriptedConsume(["m1", "m2"])
    assert batch(consume, 500) == ["m1", "m2"]
    # Only the first message is waited for; the rest is taken as fetched (timeout 0).
    assert consume.calls == [(1, 0.5), (499, 0)]


def test_a_backlog_still_comes_in_full_batches() -> None:
    consume = ScriptedConsume([f"m{i}" for i in range(1200)])
    sizes = [len(batch(consume, 500)) for _ in range(3)]
    assert sizes == [500, 500, 200]


def test_nothing_arrived_waits_once_and_takes_nothing() -> None:
    consume = ScriptedConsume([])
    assert batch(consume, 500) == []
    assert consume.calls == [(1, 0.5)]


def test_a_batch_of_one_never_asks_for_zero_messages() -> None:
    consume = ScriptedConsume(["m1", "m2"])
    assert batch(consume, 1) == ["m1"]
    assert consume.calls == [(1, 0.5)]


def stored_ids(harness: Any) -> list[list[str]]:
    return [[event.job_id for event in batch] for batch in harness.sink.stored]


def test_clients_come_from_their_factories_with_manual_offset_store_and_commit(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, b"poison")
    assert harness.runner.run() == EXIT_OK
    assert harness.consumer.properties["group.id"] == "sarchive-consumer"
    assert harness.consumer.properties["enable.auto.commit"] == "false"
    assert harness.consumer.properties["enable.auto.offset.store"] == "false"
    assert harness.dead_letters.properties["acks"] == "all"
    assert harness.dead_letters.properties["enable.idempotence"] == "true"


def test_a_consumer_factory_refusing_its_properties_is_a_config_error_and_closes_the_sink(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.refuse_properties = True
    with pytest.raises(ConfigError, match="consumer refuses its configuration"):
        harness.runner.run()
    assert harness.sink.closed


def test_an_unavailable_sink_pauses_retries_with_backoff_while_polling_then_commits_and_resumes(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, *(harness.encoded(str(n)) for n in range(3)))
    harness.sink.failures.extend([SinkUnavailableError("down"), SinkUnavailableError("down")])
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == [
        "write 3 failed", "pause", "write 3 failed", "stored ['0', '1', '2']",
        "commit {('jobs', 0): 3}", "resume", "close", "sink closed"]
    # Backing off 1 s then 2 s, the consumer kept polling (in slices of at most POLL_SLICE)
    # with its partitions paused, so it stayed in the group.
    assert harness.consumer.paused_poll_timeouts == [1.0, 1.0, 1.0]
    assert harness.consumer.paused == set()
    assert harness.runner.metrics.sink_unavailable._value.get() == 2
    assert harness.runner.metrics.sink_up._value.get() == 1


def test_a_refused_commit_keeps_its_offsets_and_commits_them_with_the_next_commit(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness([P0, P1], batch_max_messages=2)
    harness.consumer.deliver(P0, harness.encoded("a0"), harness.encoded("a1"))
    harness.consumer.deliver(P1, harness.encoded("b0"), harness.encoded("b1"))
    harness.consumer.refuse_commits = 1  # a rebalance in progress
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == [
        "stored ['a0', 'a1']", "commit refused {('jobs', 0): 2}",
        "stored ['b0', 'b1']", "commit {('jobs', 0): 2, ('jobs', 1): 2}",
        "close", "sink closed"]
    assert harness.runner.metrics.commit_failures._value.get() == 1


def test_a_refused_commit_is_retried_when_no_further_message_arrives(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"))
    harness.consumer.refuse_commits = 1
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == ["stored ['1']", "commit refused {('jobs', 0): 1}",
                               "commit {('jobs', 0): 1}", "close", "sink closed"]


def test_partitions_revoked_during_a_retry_leave_their_messages_unstored_and_uncommitted(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness([P0, P1])
    harness.consumer.deliver(P0, harness.encoded("mine-no-more"))
    harness.consumer.deliver(P1, harness.encoded("still-mine"))
    harness.sink.failures.append(SinkUnavailableError("down"))
    harness.consumer.paused_steps.append(lambda consumer: consumer.revoke(P0))
    assert harness.runner.run() == EXIT_OK
    assert stored_ids(harness) == [["still-mine"]]
    assert harness.consumer.committed == {P1: 1}
    assert harness.journal == [
        "write 2 failed", "pause", "revoked [('jobs', 0)]", "stored ['still-mine']",
        "commit {('jobs', 1): 1}", "resume", "close", "sink closed"]


def test_offsets_made_durable_before_a_revoke_are_committed_on_revoke(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"))
    harness.consumer.refuse_commits = 1  # the batch's own commit
    harness.consumer.idle_steps.append(lambda consumer: consumer.revoke(P0))
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == [
        "stored ['1']", "commit refused {('jobs', 0): 1}",
        "commit {('jobs', 0): 1}", "revoked [('jobs', 0)]", "close", "sink closed"]


def test_a_dead_letter_not_acknowledged_commits_nothing_and_the_batch_is_retried(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"), b"not a job event")
    harness.dead_letters.unacknowledged_flushes = 1
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == [
        "stored ['1']", "dead-letter flush: 1 unacknowledged", "pause",
        "stored ['1']", "dead-lettered 2", "commit {('jobs', 0): 2}", "resume",
        "close", "sink closed"]
    # The unacknowledged copy stayed queued and arrived with the retry's: at least once.
    assert {(m.headers[HEADER_REASON], m.headers[HEADER_SOURCE_OFFSET])
            for m in harness.dead_letters.acknowledged} == {(b"not-single-object", b"1")}
    assert all(m.topic == f"{TOPIC}.dlq" and m.value == b"not a job event"
               for m in harness.dead_letters.acknowledged)


def test_a_stop_while_idle_closes_consumer_and_sink_and_commits_nothing(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == ["close", "sink closed"]
    assert harness.consumer.closed and harness.sink.closed
    assert harness.dead_letters.queued == []


def test_a_stop_while_retrying_gives_up_the_batch_uncommitted_and_closes(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"), b"not a job event")
    harness.sink.failures.extend(SinkUnavailableError("down") for _ in range(10))
    harness.consumer.paused_steps.append(lambda consumer: harness.runner.request_stop())
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == ["write 1 failed", "pause", "close", "sink closed"]
    assert harness.consumer.committed == {}
    assert harness.dead_letters.acknowledged == []


def test_a_stop_mid_batch_finishes_and_commits_that_batch_only_then_closes(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness(batch_max_messages=2)
    harness.consumer.deliver(P0, *(harness.encoded(str(n)) for n in range(4)))
    harness.sink.during_write.append(harness.runner.request_stop)
    assert harness.runner.run() == EXIT_OK
    assert harness.journal == ["stored ['0', '1']", "commit {('jobs', 0): 2}", "close",
                               "sink closed"]


def test_a_stop_mid_batch_whose_commit_is_refused_leaves_it_for_redelivery(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"))
    harness.consumer.refuse_commits = 1
    harness.sink.during_write.append(harness.runner.request_stop)
    assert harness.runner.run() == EXIT_OK
    assert harness.consumer.committed == {}
    assert harness.journal == ["stored ['1']", "commit refused {('jobs', 0): 1}", "close",
                               "sink closed"]


def test_end_to_end_latency_is_observed_once_per_event_made_durable_not_for_dead_letters(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    harness.consumer.deliver(P0, harness.encoded("1"), b"not a job event", harness.encoded("2"))
    assert harness.runner.run() == EXIT_OK
    end_to_end = harness.runner.metrics.end_to_end
    assert end_to_end._sum.get() > 0, "job_event's submit time is in the past"
    assert sum(bucket.get() for bucket in end_to_end._buckets) == 2
    assert harness.runner.metrics.dead_lettered.labels(
        "test-consumer", "not-single-object")._value.get() == 1


def test_the_dead_letter_topic_is_prepared_before_consuming(runner_harness: MakeHarness) -> None:
    harness = runner_harness()
    assert harness.runner.run() == EXIT_OK
    assert [topic for topic, _, _ in harness.admin.created] == [f"{TOPIC}.dlq"]
    assert harness.admin.properties["bootstrap.servers"] == "127.0.0.1:9092"


def test_client_errors_are_counted_by_kind_every_kind_exported_from_the_start(
        runner_harness: MakeHarness) -> None:
    harness = runner_harness()

    def count(kind: str) -> float | None:
        value: float | None = harness.registry.get_sample_value(
            "sarchive_consumer_kafka_client_errors_total",
            {"service": "test-consumer", "kind": kind})
        return value

    assert [count(kind) for kind in ("transport", "all-brokers-down", "other")] == [0, 0, 0]
    harness.consumer.deliver(P0, b"poison")  # so that the dead-letter producer exists
    assert harness.runner.run() == EXIT_OK
    error_cb = harness.consumer.properties["error_cb"]
    for _ in range(3):
        error_cb(confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT))
    error_cb(confluent_kafka.KafkaError(confluent_kafka.KafkaError._ALL_BROKERS_DOWN))
    harness.dead_letters.properties["error_cb"](
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT))
    assert [count(kind) for kind in ("transport", "all-brokers-down", "other")] == [4, 1, 0]


@pytest.mark.parametrize(("code", "detail", "kind"), [
    (confluent_kafka.KafkaError._TRANSPORT, "SSL handshake failed: certificate expired", "tls"),
    (confluent_kafka.KafkaError._SSL, "", "tls"),
    (confluent_kafka.KafkaError.SASL_AUTHENTICATION_FAILED, "", "authentication"),
    (confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, "", "authorization"),
    (confluent_kafka.KafkaError._TRANSPORT, "Connection refused", "transport"),
])
def test_a_security_refusal_is_counted_under_its_access_failure_cause(
        code: int, detail: str, kind: str) -> None:
    assert client_error_kind(confluent_kafka.KafkaError(code, detail)) == kind


def test_a_fatal_error_reported_to_the_consumers_error_callback_stops_the_service(
        runner_harness: MakeHarness) -> None:
    """librdkafka reports e.g. a static member fenced by another with its group.instance.id
    to error_cb, not from consume(): the runner must not go on as a fenced zombie."""
    harness = runner_harness()

    def fenced(consumer: Any) -> None:
        # As librdkafka reports it: the code _FATAL, without the fatal flag.
        consumer.properties["error_cb"](confluent_kafka.KafkaError(
            confluent_kafka.KafkaError._FATAL, "Static consumer fenced by other consumer"))

    harness.consumer.idle_steps.append(fenced)
    assert harness.runner.run() == EXIT_FAILURE
    assert harness.consumer.closed and harness.sink.closed


def test_a_fatal_error_event_from_consume_stops_the_service(runner_harness: MakeHarness) -> None:
    """As a fenced static member gets it: the code _FATAL, without the fatal flag."""
    harness = runner_harness()
    fatal = harness.consumer.deliver(P0, b"")[0]
    fatal.error = lambda: confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "fenced")
    assert harness.runner.run() == EXIT_FAILURE
    assert harness.consumer.closed and harness.sink.closed


def test_refusals_by_the_brokers_security_are_counted_by_cause_and_named_once(
        runner_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    harness = runner_harness()
    refusal = confluent_kafka.KafkaError(
        confluent_kafka.KafkaError._TRANSPORT,
        "ssl://127.0.0.1:19193/bootstrap: Receive failed: error:0A000416:SSL routines::"
        "ssl/tls alert certificate unknown")
    for _ in range(3):  # librdkafka reports it again with every connection attempt
        harness.consumer.idle_steps.append(
            lambda consumer: consumer.properties["error_cb"](refusal))
    assert harness.runner.run() == EXIT_OK
    samples = {s.labels["cause"]: s.value
               for family in harness.runner.metrics.kafka_access_failures.collect()
               for s in family.samples if s.name.endswith("_total")}
    assert samples == {"authentication": 0, "tls": 3, "authorization": 0}
    named = [r for r in caplog.records if "Kafka TLS verification failed" in r.getMessage()]
    assert len(named) == 1
    assert harness.consumer.committed == {}
