"""How a job event travels as a Kafka message: key, value and headers."""

from __future__ import annotations

from schemas.codec import CONTENT_TYPE, JobEventCodec

DEFAULT_TOPIC = "sarchive.jobs"
HEADER_CONTENT_TYPE = "content-type"
HEADER_SCHEMA_VERSION = "sarchive-schema-version"

Headers = list[tuple[str, bytes]]


def message_key(job_key: str) -> bytes:
    """The job key, so every delivery of one job lands in one partition, in order."""
    return job_key.encode("utf-8")


def message_headers(codec: JobEventCodec) -> Headers:
    return [
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode("ascii")),
        (HEADER_SCHEMA_VERSION, str(codec.schema_version).encode("ascii")),
    ]
