"""Job events as Elasticsearch documents and bulk lines: pure functions of the event, no I/O.

The document is what support staff search and read: the event's fields, the script as text
(and its exact bytes where they are not UTF-8), the directives and environment as key/value
maps (and the environment's exact entries where the map loses some), the environment's words
for full-text search, and the modules the job loaded. Deliberately left out: the raw spool
files (the file archive keeps them byte for byte; the reader rebuilds the script and
environment ones from these fields).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.job_modules import LOADED_MODULES_VARIABLE, job_modules
from schemas.model import JobEvent, canonical_environment, metadata_fields

# Elasticsearch refuses a longer _id, and it does so for the whole bulk request, not one item.
MAX_ID_BYTES = 512
# Index names: lower case, at most 255 bytes, none of these characters, no leading - _ + .
_INDEX_NAME_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:]')
_MAX_INDEX_NAME_BYTES = 255
_MONTH_SUFFIX_BYTES = len("-YYYY.MM")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DocumentError(Exception):
    """An event that cannot become a document at all: per-message, dead-letter it."""

    reason = "document"


class JobKeyTooLongError(DocumentError):
    """The job key is longer than Elasticsearch accepts as a document _id."""

    reason = "job-key-too-long"


class SubmitTimeOutOfRangeError(DocumentError):
    """The submit time has no year 1..9999, so no monthly index name can be given to it."""

    reason = "submit-time-out-of-range"


DOCUMENT_REASONS = tuple(error.reason for error in (
    DocumentError, JobKeyTooLongError, SubmitTimeOutOfRangeError))


def check_index_prefix(prefix: str) -> str:
    """The prefix unchanged if `<prefix>-YYYY.MM` and the alias `<prefix>` are valid names."""
    if not prefix:
        raise ValueError("index prefix must not be empty")
    if prefix[0] in "-_+.":
        raise ValueError(f"index prefix {prefix!r} must not start with '-', '_', '+' or '.'")
    if prefix != prefix.lower():
        raise ValueError(f"index prefix {prefix!r} must be lower case")
    bad = sorted(set(_INDEX_NAME_FORBIDDEN.findall(prefix)))
    if bad:
        raise ValueError(f"index prefix {prefix!r} contains characters Elasticsearch refuses"
                         f" in index names: {' '.join(repr(c) for c in bad)}")
    if len(prefix.encode("utf-8")) + _MONTH_SUFFIX_BYTES > _MAX_INDEX_NAME_BYTES:
        raise ValueError(f"index prefix is too long: index names are limited to"
                         f" {_MAX_INDEX_NAME_BYTES} bytes including '-YYYY.MM'")
    return prefix


def index_name(prefix: str, submit_time_ms: int) -> str:
    """`<prefix>-YYYY.MM` of the submit time's UTC month, so every redelivery hits one index."""
    try:
        submitted = _EPOCH + timedelta(milliseconds=submit_time_ms)
    except OverflowError as exc:
        raise SubmitTimeOutOfRangeError(
            f"submit_time {submit_time_ms} ms is outside the years 1..9999") from exc
    return f"{prefix}-{submitted.year:04d}.{submitted.month:02d}"


def build_document(event: JobEvent) -> dict[str, Any]:
    """The document indexed for one event (see docs/elasticsearch.md for each field)."""
    # A repeated key keeps its last value, as a shell reading the environment would.
    environment = dict(event.environment_entries())
    document: dict[str, Any] = {
        **metadata_fields(event),
        "script": event.script.decode("utf-8", "replace"),
        "environment": environment,
        "environment_text": environment_search_text(environment),
        "modules": list(job_modules(event.script, environment.get(LOADED_MODULES_VARIABLE))),
    }
    if not _is_utf8(event.script):
        # The text above had bytes replaced; keep the exact ones, only where they differ,
        # so that the common (UTF-8) script is not stored twice.
        document["script_b64"] = base64.b64encode(event.script).decode("ascii")
    if canonical_environment(environment.items()) != event.environment:
        # The map lost something (bytes not UTF-8, a repeated key, an entry without '='):
        # keep the exact entries, only then, for `sarchive show --env -0` and --restore.
        document["environment_b64"] = base64.b64encode(event.environment).decode("ascii")
    return document


def environment_search_text(environment: dict[str, str]) -> str:
    """The environment as words to search: one `KEY=VALUE` line per variable, with ':' made
    a space, because it separates the items of PATH-like lists (PATH, LOADEDMODULES,
    MODULEPATH) and yet Unicode word breaking keeps `gcc:openmpi:gromacs` as one word."""
    return "\n".join(f"{key}={value.replace(':', ' ')}" for key, value in environment.items())


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the way the bulk body carries it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One event ready for the bulk API: its index, its _id and its two NDJSON lines."""

    index: str
    doc_id: str
    lines: bytes


def bulk_item(event: JobEvent, prefix: str) -> BulkItem:
    """The `create` action and document lines for one event; DocumentError if it has none.

    `create` rather than `index`: a redelivered or replayed event has the same _id and the
    same content, so Elasticsearch answers 409 and the stored document stays untouched
    (same _version and _seq_no, no rewrite, no deleted-document churn in the segments).
    """
    if len(event.job_key.encode("utf-8")) > MAX_ID_BYTES:
        raise JobKeyTooLongError(
            f"job_key is {len(event.job_key.encode('utf-8'))} bytes; Elasticsearch accepts"
            f" an _id of at most {MAX_ID_BYTES}")
    index = index_name(prefix, event.submit_time)
    action = encode_json({"create": {"_index": index, "_id": event.job_key}})
    return BulkItem(index, event.job_key,
                    action + b"\n" + encode_json(build_document(event)) + b"\n")
