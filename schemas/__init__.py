"""The contract between sarchive's producer and consumers: the job event and its codec."""

from schemas.codec import JobEventCodec, load_schema_versions
from schemas.errors import (
    CodecError,
    CorruptEventError,
    NotSingleObjectEncodedError,
    UnknownSchemaError,
)
from schemas.model import JobEvent, Scheduler, SpoolFile, UserSource, make_job_key

__all__ = [
    "CodecError",
    "CorruptEventError",
    "JobEvent",
    "JobEventCodec",
    "NotSingleObjectEncodedError",
    "Scheduler",
    "SpoolFile",
    "UnknownSchemaError",
    "UserSource",
    "load_schema_versions",
    "make_job_key",
]
