"""Settings and librdkafka properties shared by every sarchive consumer service."""

from __future__ import annotations

import dataclasses
import socket

from runtime.config import ConfigError, setting
from runtime.kafka import (
    PRODUCER_GUARANTEES,
    PRODUCER_GUARANTEES_WHY,
    KafkaSettings,
    kafka_client_properties,
    with_guarantees,
)
from runtime.startup import ServiceSettings
from schemas.limits import MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES, MIB

# Pre-fetched messages librdkafka may hold (queued.max.messages.kbytes, default 64 MiB):
# room for one largest event, or a batch of ~500 events of ~30 KB.
PREFETCH_BYTES = MAX_MESSAGE_BYTES
# Per partition and fetch. Batches are zstd-compressed, and a 16 MiB fetch decompresses to
# several times that, which is what pushed a consumer reading a backlog past 300 MB. A larger
# record batch (an event up to MAX_EVENT_BYTES) is still returned whole: the broker always
# sends the first batch of a partition, whatever this limit (KIP-74).
PARTITION_FETCH_BYTES = MIB
FETCH_QUEUE_BACKOFF_MS = 10

# These properties carry the "commit only what is durable" guarantee; a pass-through
# --kafka-property must not switch them off.
_GUARANTEED = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
}


@dataclasses.dataclass(frozen=True)
class ConsumerSettings(KafkaSettings, ServiceSettings):
    group: str = setting("sarchive-consumer", help="Kafka consumer group id; instances sharing"
                         " a group share the topic's partitions")
    dlq_topic: str | None = setting(None, help="dead-letter topic for messages that cannot be"
                                    " decoded or stored (default: <topic>.dlq)")
    batch_max_messages: int = setting(500, help="most messages taken per batch (one commit and"
                                      " one durable write round per batch)")
    batch_timeout: float = setting(0.5, help="seconds to wait for a message when none has"
                                   " arrived; a batch is what has arrived, never waited for")
    retry_backoff_initial: float = setting(
        1.0, help="seconds to wait before the first retry when the sink is unavailable")
    retry_backoff_max: float = setting(
        60.0, help="longest wait between retries while the sink stays unavailable")
    commit_timeout: float = setting(
        30.0, help="seconds to wait for dead-letter acknowledgements before a commit")
    static_membership: bool = setting(
        True, help="join the group as a static member (group.instance.id): a consumer"
        " restarted after a crash gets its partitions back at once instead of after the"
        " session timeout")
    group_instance_id: str | None = setting(
        None, help="the static member's id, unique in the group and stable across restarts"
        " (default: <group>-<hostname>; give each instance on one host its own)")

    def __post_init__(self) -> None:
        if not self.group:
            raise ConfigError("group must not be empty")
        if self.batch_max_messages < 1:
            raise ConfigError(
                f"batch_max_messages must be at least 1, got {self.batch_max_messages}")
        for name in ("batch_timeout", "retry_backoff_initial", "commit_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retry_backoff_max < self.retry_backoff_initial:
            raise ConfigError("retry_backoff_max must not be smaller than retry_backoff_initial")
        if self.dead_letter_topic == self.topic:
            raise ConfigError(f"dlq_topic must differ from topic {self.topic!r}")

    @property
    def instance_id(self) -> str | None:
        """group.instance.id: None for dynamic membership."""
        if not self.static_membership:
            return None
        return self.group_instance_id or f"{self.group}-{socket.gethostname()}"

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic if self.dlq_topic else f"{self.topic}.dlq"


def consumer_properties(settings: ConsumerSettings) -> dict[str, str]:
    """librdkafka consumer properties: manual offset store and commit, large messages.

    Pass-through --kafka-property values override the defaults here, except the two
    properties the delivery guarantee rests on, which raise ConfigError when contradicted.
    """
    props: dict[str, str] = {
        "group.id": settings.group,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "max.partition.fetch.bytes": str(PARTITION_FETCH_BYTES),
        "fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "queued.max.messages.kbytes": str(PREFETCH_BYTES // 1024),
        # Once that pre-fetch is full librdkafka stops fetching for this long (default 1 s):
        # with a small pre-fetch the default made a backlog drain in 1 s steps (~1,100
        # events/s); 10 ms keeps the same memory bound at 15,000+ events/s.
        "fetch.queue.backoff.ms": str(FETCH_QUEUE_BACKOFF_MS),
        "receive.message.max.bytes": str(MAX_RESPONSE_BYTES),
    }
    if settings.instance_id is not None:
        props["group.instance.id"] = settings.instance_id
    props.update(kafka_client_properties(settings))
    return with_guarantees(props, _GUARANTEED, "offsets are stored and committed only after"
                           " the sink is durable")


def admin_properties(settings: ConsumerSettings) -> dict[str, str]:
    """librdkafka properties for the admin client that prepares the dead-letter topic."""
    return kafka_client_properties(settings)


def dead_letter_producer_properties(settings: ConsumerSettings) -> dict[str, str]:
    """librdkafka properties for the dead-letter producer: every message acknowledged by all
    in-sync replicas, no duplicates from retries, room for the largest job event."""
    props: dict[str, str] = {"message.max.bytes": str(MAX_MESSAGE_BYTES)}
    props.update(kafka_client_properties(settings))
    return with_guarantees(props, PRODUCER_GUARANTEES, PRODUCER_GUARANTEES_WHY)
