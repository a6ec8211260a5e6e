"""A thin adapter over Kafka's AdminClient: describe a topic, create one. Library errors
become TopicAdminError and its kinds; no confluent_kafka type leaves this module."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import confluent_kafka
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from runtime.kafka import create_client

# The AdminClient's requests: a broker that does not answer within this is an error here,
# never a consumer that waits at start for longer.
ADMIN_TIMEOUT = 10.0

MAX_MESSAGE_BYTES_CONFIG = "max.message.bytes"


class TopicAdminError(Exception):
    """The broker did not describe or create the topic (unreachable, refused, ...)."""


class TopicAuthorizationError(TopicAdminError):
    """The principal may not describe or create the topic."""


class TopicExistsError(TopicAdminError):
    """Creating a topic that exists (another instance created it first)."""


@dataclass(frozen=True)
class TopicDescription:
    partitions: int
    max_message_bytes: int


class TopicAdmin(Protocol):
    def describe(self, topic: str) -> TopicDescription | None:
        """The topic's partition count and size limit; None when it does not exist."""

    def create(self, topic: str, partitions: int, max_message_bytes: int) -> None:
        """Create the topic (replication factor: the broker's default)."""


AdminFactory = Callable[..., Any]

_AUTHORIZATION = {confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                  confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def _translated(exc: BaseException, what: str) -> TopicAdminError:
    error = exc.args[0] if exc.args else None
    if isinstance(error, confluent_kafka.KafkaError):
        detail = f"{what}: {error.name()}: {error.str()}"
        if error.code() in _AUTHORIZATION:
            return TopicAuthorizationError(detail)
        if error.code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
            return TopicExistsError(detail)
        return TopicAdminError(detail)
    return TopicAdminError(f"{what}: {str(exc) or 'no answer in time'}")


def _is_unknown_topic(exc: BaseException) -> bool:
    error = exc.args[0] if exc.args else None
    return (isinstance(error, confluent_kafka.KafkaError)
            and error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART)


class KafkaTopicAdmin:
    """TopicAdmin on confluent_kafka's AdminClient, created on first use."""

    def __init__(self, properties: Mapping[str, object],
                 admin_factory: AdminFactory = AdminClient,
                 timeout: float = ADMIN_TIMEOUT) -> None:
        self._properties = dict(properties)
        self._factory = admin_factory
        self._timeout = timeout
        self._admin: Any = None

    def _client(self) -> Any:
        if self._admin is None:
            self._admin = create_client(self._factory, self._properties, "admin client")
        return self._admin

    def describe(self, topic: str) -> TopicDescription | None:
        admin = self._client()
        try:
            described = admin.describe_topics(
                confluent_kafka.TopicCollection([topic]),
                request_timeout=self._timeout)[topic].result(timeout=self._timeout)
            resource = ConfigResource(ResourceType.TOPIC, topic)
            configs = admin.describe_configs(
                [resource], request_timeout=self._timeout)[resource].result(
                timeout=self._timeout)
        except (confluent_kafka.KafkaException, concurrent.futures.TimeoutError) as exc:
            if _is_unknown_topic(exc):
                return None
            raise _translated(exc, f"describing topic {topic!r}") from exc
        limit = configs.get(MAX_MESSAGE_BYTES_CONFIG)
        if limit is None or limit.value is None:
            raise TopicAdminError(f"topic {topic!r} has no {MAX_MESSAGE_BYTES_CONFIG}")
        return TopicDescription(len(described.partitions), int(limit.value))

    def create(self, topic: str, partitions: int, max_message_bytes: int) -> None:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                       config={MAX_MESSAGE_BYTES_CONFIG: str(max_message_bytes)})
        try:
            self._client().create_topics(
                [new], request_timeout=self._timeout)[topic].result(timeout=self._timeout)
        except (confluent_kafka.KafkaException, concurrent.futures.TimeoutError) as exc:
            raise _translated(exc, f"creating topic {topic!r}") from exc
