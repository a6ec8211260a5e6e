"""Named errors of the job event contract; library exceptions are chained as their cause."""


class CodecError(Exception):
    """A message could not be turned into a job event. Per-message: dead-letter it."""

    reason = "codec"


class NotSingleObjectEncodedError(CodecError):
    """The bytes do not start with the Avro single-object marker C3 01 and a fingerprint."""

    reason = "not-single-object"


class UnknownSchemaError(CodecError):
    """The writer schema fingerprint is not one of the versions shipped in schemas/avsc/."""

    reason = "unknown-schema"


class CorruptEventError(CodecError):
    """The body is truncated, corrupt, or has bytes left over after the record."""

    reason = "corrupt-body"
