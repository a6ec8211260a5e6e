"""The secured test broker of infra ("kafka-secure") as the tests use it: client settings per
principal and listener, the flags that give a service those settings, and ACLs granted and
revoked through the admin super user, exactly the bindings docs/operations.md lists."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from schemas.codec import JobEventCodec

ADMIN = "admin"
ClientProperties = dict[str, str | int | float | bool]  # librdkafka properties, as typed
CODEC = JobEventCodec()


class Listener(enum.StrEnum):
    SASL_SSL = "sasl_ssl"  # SCRAM-SHA-512 user name and password over TLS
    MTLS = "mtls"  # TLS with a client certificate


@dataclass(frozen=True)
class SecureKafka:
    sasl_bootstrap: str
    mtls_bootstrap: str
    ca: Path
    credentials: Path

    def bootstrap(self, listener: Listener) -> str:
        return self.sasl_bootstrap if listener is Listener.SASL_SSL else self.mtls_bootstrap

    def password_file(self, principal: str) -> Path:
        return self.credentials / f"{principal}.password"

    def flags(self, principal: str, listener: Listener, *, password_file: Path | None = None,
              cert: tuple[Path, Path] | None = None) -> list[str]:
        """The command-line flags of a sarchive service connecting as principal; password_file
        or cert (certificate, key) replace the principal's own."""
        common = ["--brokers", self.bootstrap(listener), "--ssl-ca", str(self.ca)]
        if listener is Listener.SASL_SSL:
            return [*common, "--security-protocol", "SASL_SSL", "--sasl-mechanism",
                    "SCRAM-SHA-512", "--sasl-username", principal, "--sasl-password-file",
                    str(password_file or self.password_file(principal))]
        certificate, key = cert or (self.credentials / f"{principal}.pem",
                                    self.credentials / f"{principal}.key")
        return [*common, "--security-protocol", "SSL", "--ssl-cert", str(certificate),
                "--ssl-key", str(key)]

    def client_properties(self, principal: str = ADMIN, listener: Listener = Listener.SASL_SSL
                          ) -> ClientProperties:
        """librdkafka properties of a client connecting as principal."""
        common = {"bootstrap.servers": self.bootstrap(listener), "ssl.ca.location": str(self.ca)}
        if listener is Listener.SASL_SSL:
            return {**common, "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": principal,
                    "sasl.password": self.password_file(principal).read_text().strip()}
        return {**common, "security.protocol": "SSL",
                "ssl.certificate.location": str(self.credentials / f"{principal}.pem"),
                "ssl.key.location": str(self.credentials / f"{principal}.key")}

    def admin(self) -> AdminClient:
        return AdminClient(dict(self.client_properties()))

    # -- ACLs: what docs/operations.md tells sites to grant

    def grant(self, bindings: list[AclBinding]) -> None:
        admin = self.admin()  # kept until the futures resolve: destroying it cancels them
        for future in admin.create_acls(bindings).values():
            future.result(timeout=30)

    def revoke(self, bindings: list[AclBinding]) -> None:
        filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                    b.host, b.operation, b.permission_type) for b in bindings]
        admin = self.admin()
        for future in admin.delete_acls(filters).values():
            future.result(timeout=30)


def allow(principal: str, restype: ResourceType, name: str,
          operation: AclOperation) -> AclBinding:
    return AclBinding(restype, name, ResourcePatternType.LITERAL, f"User:{principal}", "*",
                      operation, AclPermissionType.ALLOW)


def producer_acls(principal: str, topic: str) -> list[AclBinding]:
    """Describe and write the jobs topic; idempotent writes need nothing more (KIP-679)."""
    return [allow(principal, ResourceType.TOPIC, topic, operation)
            for operation in (AclOperation.DESCRIBE, AclOperation.WRITE)]


def consumer_acls(principal: str, topic: str, group: str, dlq_topic: str) -> list[AclBinding]:
    """Read the jobs topic and its own group; describe and write the dead-letter topic."""
    return [allow(principal, ResourceType.TOPIC, topic, AclOperation.READ),
            allow(principal, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
            allow(principal, ResourceType.GROUP, group, AclOperation.READ),
            allow(principal, ResourceType.TOPIC, dlq_topic, AclOperation.DESCRIBE),
            allow(principal, ResourceType.TOPIC, dlq_topic, AclOperation.WRITE)]


def topic_job_ids(properties: ClientProperties, topic: str, timeout: float = 30.0) -> list[str]:
    """The job id of every message in topic (duplicates included), read from the beginning to
    the end offsets of the moment with a client of the given properties."""
    consumer = Consumer({**properties, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends: dict[int, int] = {}
        for partition in partitions:
            watermarks = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            assert watermarks is not None, f"no offsets for {topic}[{partition}]"
            ends[partition] = watermarks[1]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        positions = dict.fromkeys(partitions, 0)
        job_ids: list[str] = []
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is None and partition is not None and offset is not None:
                    job_ids.append(CODEC.decode(message.value() or b"").job_id)
                    positions[partition] = offset + 1
        return job_ids
    finally:
        consumer.close()


def committed_offsets(properties: ClientProperties, group: str, topic: str) -> list[int]:
    """The offsets group has committed on topic's partitions (those it committed at all)."""
    consumer = Consumer({**properties, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return [tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=30) if tp.offset >= 0]
    finally:
        consumer.close()
