"""Shared consumer settings: defaults, validation and the librdkafka properties they give."""

from __future__ import annotations

import socket

import pytest

from consumers.common.settings import (
    ConsumerSettings,
    consumer_properties,
    dead_letter_producer_properties,
)
from runtime.config import ConfigError, load_config
from schemas.limits import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES


def load(*argv: str, environ: dict[str, str] | None = None) -> ConsumerSettings:
    return load_config(ConsumerSettings, list(argv), prog="test", description="test",
                       environ=environ or {})


def test_dead_letter_topic_defaults_to_the_topic_plus_dlq() -> None:
    assert load("--topic", "jobs").dead_letter_topic == "jobs.dlq"
    assert load("--topic", "jobs", "--dlq-topic", "poison").dead_letter_topic == "poison"


def test_a_consumer_is_a_static_member_named_after_its_group_and_host_by_default() -> None:
    host = socket.gethostname()
    assert consumer_properties(load("--group", "g"))["group.instance.id"] == f"g-{host}"
    given = load("--group", "g", "--group-instance-id", "g-2")
    assert consumer_properties(given)["group.instance.id"] == "g-2"
    dynamic = load("--group", "g", "--no-static-membership")
    assert "group.instance.id" not in consumer_properties(dynamic)
    from_environment = load(environ={"SARCHIVE_GROUP_INSTANCE_ID": "host-b"})
    assert from_environment.instance_id == "host-b"


def test_consumer_commits_manually_from_the_earliest_offset() -> None:
    props = consumer_properties(load("--group", "g", "--brokers", "k1:9092,k2:9092"))
    assert props["group.id"] == "g"
    assert props["bootstrap.servers"] == "k1:9092,k2:9092"
    assert props["enable.auto.commit"] == "false"
    assert props["enable.auto.offset.store"] == "false"
    assert props["auto.offset.reset"] == "earliest"
    assert props["partition.assignment.strategy"] == "cooperative-sticky"


def test_prefetch_is_bounded_yet_admits_the_largest_message() -> None:
    """A backlog of large events must not fill memory, and the largest event the contract
    allows must still pass (a partition's first record batch comes whole whatever
    max.partition.fetch.bytes)."""
    props = consumer_properties(load())
    assert int(props["queued.max.messages.kbytes"]) * 1024 == MAX_MESSAGE_BYTES
    assert int(props["max.partition.fetch.bytes"]) <= 1024 * 1024
    assert int(props["fetch.max.bytes"]) == MAX_MESSAGE_BYTES > MAX_EVENT_BYTES
    assert int(props["receive.message.max.bytes"]) > int(props["fetch.max.bytes"])


def test_a_full_prefetch_pauses_fetching_briefly_not_for_librdkafkas_default_second() -> None:
    """With the bounded pre-fetch, the 1 s default back-off capped a backlog at ~1,100/s."""
    assert int(consumer_properties(load())["fetch.queue.backoff.ms"]) <= 10


def test_pass_through_properties_override_defaults() -> None:
    props = consumer_properties(load("--kafka-property", "auto.offset.reset=latest",
                                     "--kafka-property", "client.id=archive-1"))
    assert props["auto.offset.reset"] == "latest"
    assert props["client.id"] == "archive-1"


@pytest.mark.parametrize("prop", ["enable.auto.commit=true", "enable.auto.offset.store=true",
                                  "enable.auto.commit=1", "enable.auto.offset.store=T"])
def test_pass_through_cannot_switch_off_commit_after_durable_write(prop: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        consumer_properties(load("--kafka-property", prop))


@pytest.mark.parametrize("prop", ["enable.auto.commit=0", "enable.auto.offset.store=F"])
def test_the_guarantee_restated_as_librdkafka_reads_it_is_accepted(prop: str) -> None:
    props = consumer_properties(load("--kafka-property", prop))
    assert (props["enable.auto.commit"], props["enable.auto.offset.store"]) == ("false", "false")


def test_dead_letter_producer_waits_for_every_replica_without_duplicates() -> None:
    props = dead_letter_producer_properties(load())
    assert props["acks"] == "all"
    assert props["enable.idempotence"] == "true"
    assert int(props["message.max.bytes"]) == MAX_MESSAGE_BYTES


@pytest.mark.parametrize("weakening", ["acks=1", "enable.idempotence=false"])
def test_dead_letter_producer_refuses_a_pass_through_that_weakens_its_guarantee(
        weakening: str) -> None:
    with pytest.raises(ConfigError, match=weakening.split("=", maxsplit=1)[0]):
        dead_letter_producer_properties(load("--kafka-property", weakening))


@pytest.mark.parametrize(("argv", "message"), [
    (["--batch-max-messages", "0"], "batch_max_messages"),
    (["--batch-timeout", "0"], "batch_timeout"),
    (["--retry-backoff-initial", "5", "--retry-backoff-max", "1"], "retry_backoff_max"),
    (["--topic", "t", "--dlq-topic", "t"], "dlq_topic"),
    (["--group", ""], "group"),
])
def test_inconsistent_settings_are_configuration_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(*argv)


def test_settings_come_from_the_environment_too() -> None:
    settings = load(environ={"SARCHIVE_BATCH_MAX_MESSAGES": "7", "SARCHIVE_GROUP": "g2"})
    assert (settings.batch_max_messages, settings.group) == (7, "g2")
