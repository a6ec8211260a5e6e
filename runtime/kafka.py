"""Kafka connection settings common to every service, turned into librdkafka properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from runtime.config import ConfigError, secret_value, setting
from schemas.wire import DEFAULT_TOPIC

ClientT = TypeVar("ClientT")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    brokers: str = setting("127.0.0.1:9092", help="Kafka bootstrap servers, host:port[,host:port]")
    topic: str = setting(DEFAULT_TOPIC, help="topic carrying the job events")
    security_protocol: str = setting("PLAINTEXT", choices=SECURITY_PROTOCOLS,
                                     help="Kafka security.protocol")
    ssl_ca: Path | None = setting(None, help="CA certificate file (PEM) to verify the brokers")
    ssl_cert: Path | None = setting(None, help="client certificate file (PEM) for mutual TLS")
    ssl_key: Path | None = setting(None, help="client private key file (PEM) for mutual TLS")
    ssl_key_password: str | None = setting(None, secret=True,
                                           help="password of the client private key")
    sasl_mechanism: str | None = setting(None, choices=SASL_MECHANISMS,
                                         help="SASL mechanism")
    sasl_username: str | None = setting(None, help="SASL user name")
    sasl_password: str | None = setting(None, secret=True, help="SASL password")
    sasl_password_file: Path | None = setting(
        None, help="file holding the SASL password (first line), instead of --sasl-password")
    kafka_property: tuple[str, ...] = setting(
        (), help="any other librdkafka property as KEY=VALUE (repeatable; last one wins)")


# The librdkafka property each connection setting gives (sasl.password: sasl_password or the
# first line of sasl_password_file); a refusal naming the property names the setting.
SETTING_OF_PROPERTY = {
    "bootstrap.servers": "brokers",
    "security.protocol": "security_protocol",
    "ssl.ca.location": "ssl_ca",
    "ssl.certificate.location": "ssl_cert",
    "ssl.key.location": "ssl_key",
    "ssl.key.password": "ssl_key_password",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
}


def kafka_client_properties(settings: KafkaSettings) -> dict[str, str]:
    """librdkafka properties for the connection and security settings (no role-specific ones)."""
    given = {key: getattr(settings, name) for key, name in SETTING_OF_PROPERTY.items()}
    given["sasl.password"] = secret_value(settings.sasl_password, settings.sasl_password_file,
                                          "sasl_password_file")
    props = {key: str(value) for key, value in given.items() if value is not None}
    for item in settings.kafka_property:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"kafka_property {item!r} is not KEY=VALUE")
        props[key.strip()] = value
    return props


# Every producer of sarchive (the producer service, the consumers' dead-letter producer):
# each message acknowledged by all in-sync replicas, no duplicates or reordering from retries.
PRODUCER_GUARANTEES = {"acks": "all", "enable.idempotence": "true"}
PRODUCER_GUARANTEES_WHY = ("every event is acknowledged by all in-sync replicas and retried"
                           " without duplicates (acks=all, enable.idempotence=true)")


# librdkafka's other names of a guaranteed property (CONFIGURATION.md): an alias set in a
# pass-through is the same property, so it is checked as such.
PROPERTY_ALIASES = {"request.required.acks": "acks", "topic.request.required.acks": "acks"}
# Values librdkafka reads as the required one: acks=-1 is acks=all; a boolean property takes
# t and 1 for true, f and 0 for false (any case).
_SAME_ACKS = {"-1": "all"}
_SAME_BOOLEANS = {"t": "true", "1": "true", "f": "false", "0": "false"}


def _as_librdkafka_reads(key: str, value: str, required: str) -> str:
    value = value.strip().lower()
    if key == "acks":
        return _SAME_ACKS.get(value, value)
    return _SAME_BOOLEANS.get(value, value) if required in {"true", "false"} else value


def with_guarantees(properties: Mapping[str, str], guaranteed: Mapping[str, str],
                    why: str) -> dict[str, str]:
    """properties with the ones a service's guarantee rests on set; a pass-through
    --kafka-property that contradicts one of them, under its name or an alias, is a
    ConfigError, never silently obeyed or overridden."""
    for name, given in properties.items():
        key = PROPERTY_ALIASES.get(name, name)
        required = guaranteed.get(key)
        if required is None:
            continue
        if _as_librdkafka_reads(key, given, required) != required:
            raise ConfigError(f"kafka_property {name}={given} is not allowed: {why}")
    return {**{name: value for name, value in properties.items()
               if PROPERTY_ALIASES.get(name, name) not in guaranteed}, **guaranteed}


def create_client(factory: Callable[..., ClientT], properties: Mapping[str, object],
                  role: str) -> ClientT:
    """A confluent-kafka client from factory(properties). librdkafka checks the properties
    when the client is created and connects later, so its refusal here is a configuration
    error (an unknown or malformed --kafka-property), not a broker problem."""
    try:
        return factory(dict(properties))
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        detail = error.str() if hasattr(error, "str") else str(error)
        # "ssl.ca.location failed: ..." is --ssl-ca's file; a property of no setting of ours
        # came from --kafka-property.
        setting_name = next((name for key, name in SETTING_OF_PROPERTY.items()
                             if key in detail), "kafka_property")
        raise ConfigError(f"{setting_name}: the Kafka {role} refuses its configuration:"
                          f" {detail}") from exc


# -- the broker's security refusing a client: authentication, TLS verification, ACLs. Each is
# named in one clear log line and counted by cause; none of them drops an event.
ACCESS_FAILURE_CAUSES = ("authentication", "tls", "authorization")
_AUTHORIZATION_CODES = frozenset({"TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED",
                                  "CLUSTER_AUTHORIZATION_FAILED",
                                  "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"})


def access_failure_cause(code: str, detail: str) -> str | None:
    """Which security check of the broker refused the client, from librdkafka's error name
    and text (one of ACCESS_FAILURE_CAUSES); None for any other error. A client certificate
    the broker rejects (expired, untrusted) arrives as a TLS alert on a _TRANSPORT error."""
    if code in {"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"}:
        return "authentication"
    if code == "_SSL" or (code == "_TRANSPORT" and "SSL" in detail):
        return "tls"
    if code in _AUTHORIZATION_CODES:
        return "authorization"
    return None


# What a client error (error_cb, or an error event from consume()) is about, for a metric
# with a bounded label set; every kind is exported from the start. A refusal by the broker's
# security is named by its access failure cause: one classification of those, not two.
CLIENT_ERROR_KINDS = ("transport", "all-brokers-down", "resolve", "timed-out",
                      *ACCESS_FAILURE_CAUSES, "other")
_CLIENT_ERROR_KIND = {
    KafkaError._TRANSPORT: "transport",
    KafkaError._ALL_BROKERS_DOWN: "all-brokers-down",
    KafkaError._RESOLVE: "resolve",
    KafkaError._TIMED_OUT: "timed-out",
    KafkaError.REQUEST_TIMED_OUT: "timed-out",
}


def client_error_kind(error: KafkaError) -> str:
    """One of CLIENT_ERROR_KINDS for a librdkafka error."""
    cause = access_failure_cause(error.name(), error.str())
    return cause if cause is not None else _CLIENT_ERROR_KIND.get(error.code(), "other")


def access_failure_message(cause: str, code: str, detail: str, refused: str) -> str:
    """One line naming the cause and what to fix; refused says what authorization refused,
    e.g. "write topic jobs"."""
    if cause == "authorization":
        return (f"not authorised to {refused} ({code}): grant the principal the ACLs"
                " docs/operations.md lists; no restart needed once granted")
    if cause == "tls":
        return (f"Kafka TLS verification failed ({code}: {detail}): check --ssl-ca and that"
                " the client certificate is valid, unexpired and issued by a CA the broker"
                " trusts")
    return (f"Kafka authentication failed ({code}: {detail}): check the SASL user name and"
            " password; a changed password takes effect at the next start")
