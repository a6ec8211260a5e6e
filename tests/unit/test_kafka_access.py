"""Refusals by the broker's security are told apart from other Kafka errors, named in one line
with what to fix, and counted by cause from 0 (runtime.kafka, both services' metrics)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from consumers.common.metrics import ConsumerMetrics
from producer.metrics import ProducerMetrics
from runtime.kafka import ACCESS_FAILURE_CAUSES, access_failure_cause, access_failure_message

# Error names and texts as librdkafka reported them against infra's kafka-secure broker.
WRONG_PASSWORD = ("_AUTHENTICATION", "sasl_ssl://127.0.0.1:19192/bootstrap: SASL authentication"
                  " error: Authentication failed during authentication due to invalid"
                  " credentials with SASL mechanism SCRAM-SHA-512")
UNTRUSTED_BROKER = ("_SSL", "SSL handshake failed: error:0A000086:SSL routines::certificate"
                    " verify failed: broker certificate could not be verified")
EXPIRED_CLIENT_CERT = ("_TRANSPORT", "ssl://127.0.0.1:19193/bootstrap: Receive failed:"
                       " error:0A000416:SSL routines::ssl/tls alert certificate unknown")


@pytest.mark.parametrize(("code", "detail", "cause"), [
    (*WRONG_PASSWORD, "authentication"),
    (*UNTRUSTED_BROKER, "tls"),
    (*EXPIRED_CLIENT_CERT, "tls"),
    ("TOPIC_AUTHORIZATION_FAILED", "Broker: Topic authorization failed", "authorization"),
    ("GROUP_AUTHORIZATION_FAILED", "Broker: Group authorization failed", "authorization"),
    ("CLUSTER_AUTHORIZATION_FAILED", "Broker: Cluster authorization failed", "authorization"),
    ("_TRANSPORT", "Connection refused", None),
    ("_ALL_BROKERS_DOWN", "1/1 brokers are down", None),
    ("NOT_ENOUGH_REPLICAS", "Broker: Not enough in-sync replicas", None),
])
def test_access_failure_cause_names_the_security_check_that_refused(
        code: str, detail: str, cause: str | None) -> None:
    assert access_failure_cause(code, detail) == cause


def test_access_failure_message_names_the_cause_and_what_was_refused() -> None:
    assert access_failure_message("authorization", "TOPIC_AUTHORIZATION_FAILED", "x",
                                  "write topic jobs").startswith(
        "not authorised to write topic jobs (TOPIC_AUTHORIZATION_FAILED)")
    assert "authentication failed" in access_failure_message("authentication", *WRONG_PASSWORD,
                                                             "")
    assert "TLS verification failed" in access_failure_message("tls", *UNTRUSTED_BROKER, "")


def test_access_failures_are_exported_at_zero_for_every_cause() -> None:
    registry = CollectorRegistry()
    ProducerMetrics(registry)
    ConsumerMetrics(registry, "archive")
    for cause in ACCESS_FAILURE_CAUSES:
        assert registry.get_sample_value("sarchive_producer_kafka_access_failures_total",
                                         {"cause": cause}) == 0
        assert registry.get_sample_value("sarchive_consumer_kafka_access_failures_total",
                                         {"service": "archive", "cause": cause}) == 0
