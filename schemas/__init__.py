"""The contract between sarchive's producer and consumers: the job event and its codec.

The codec (and fastavro, ~0.1 s to import) is loaded on first use of JobEventCodec or
load_schema_versions (PEP 562), so a reader such as `sarchive` that needs only the model or
the archive layout does not pay for it at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from schemas.errors import (
    CodecError,
    CorruptEventError,
    NotSingleObjectEncodedError,
    UnknownSchemaError,
)
from schemas.model import JobEvent, Scheduler, SpoolFile, UserSource, make_job_key

if TYPE_CHECKING:
    from schemas.codec import JobEventCodec, load_schema_versions

_CODEC_NAMES = frozenset({"JobEventCodec", "load_schema_versions"})

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


def __getattr__(name: str) -> Any:
    if name in _CODEC_NAMES:
        from schemas import codec  # noqa: PLC0415 -- the lazy import is the point

        return getattr(codec, name)
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")
