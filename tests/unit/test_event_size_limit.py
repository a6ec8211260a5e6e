"""One event size limit, the contract's, in every place that states a Kafka size outside the
code: the test broker's template is filled from it, the compose stack's broker, the README and
the docs state it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.limits import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES

REPO = Path(__file__).resolve().parents[2]
SIZE_SETTING = re.compile(
    r"(?:max\.message\.bytes|message\.max\.bytes|replica\.fetch(?:\.response)?\.max\.bytes"
    r"|MESSAGE_MAX_BYTES|REPLICA_FETCH(?:_RESPONSE)?_MAX_BYTES)[\"'=: ]+\"?(\d+)")


def test_the_limits_nest_event_inside_message_inside_fetch_response() -> None:
    assert MAX_EVENT_BYTES < MAX_MESSAGE_BYTES < MAX_RESPONSE_BYTES


@pytest.mark.parametrize("path", ["deploy/kafka/server.properties", "docs/operations.md",
                                  "docs/producer.md", "README.md"])
def test_every_stated_kafka_size_is_the_contracts_message_limit(path: str) -> None:
    sizes = {int(size) for size in SIZE_SETTING.findall((REPO / path).read_text())}
    assert sizes == {MAX_MESSAGE_BYTES}


@pytest.mark.parametrize("name", ["server.properties.template",
                                  "server-secure.properties.template",
                                  "cluster-broker.properties.template"])
def test_every_test_brokers_template_takes_its_sizes_from_the_contract(name: str) -> None:
    template = (REPO / "infra" / "kafka" / name).read_text()
    assert not SIZE_SETTING.findall(template), "a literal size instead of $max_message_bytes"
    for setting in ("message.max.bytes", "replica.fetch.max.bytes",
                    "replica.fetch.response.max.bytes"):
        assert f"{setting}=$max_message_bytes" in template, setting
