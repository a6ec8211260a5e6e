"""The metadata sidecar stored beside a job's files: pure JSON of the event's metadata.

The sidecar describes the job without repeating its script or environment: identity, user,
directives, sizes and digests, times, the modules the job loaded (schemas.job_modules), what
the producer redacted or truncated, and which archive files hold the job. Its job_key also
tells the archive which job owns a path when a scheduler reuses a job id (see
consumers.archive.slots).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.archive_layout import PlacedFile
from schemas.job_modules import LOADED_MODULES_VARIABLE, job_modules
from schemas.model import JobEvent, metadata_fields

# Still /1 with "modules" added: readers take the keys they know, and an archive's sidecars
# are only ever recognised by this value and read for their job_key, so sidecars written
# before (without "modules") and after stay one format and a redelivery over either is a
# duplicate. A /2 would turn every earlier sidecar into a stranger's (a collision).
FORMAT = "sarchive-archive-metadata/1"


_LOADED_ENTRY = LOADED_MODULES_VARIABLE.encode()


def loaded_modules(environment: bytes) -> str | None:
    """The value of the environment's last LOADEDMODULES entry, as schemas.job_modules'
    event_modules reads it (an entry without '=' has the empty value), None without one.

    Found in the canonical bytes (NUL-terminated entries) without decoding every entry into
    pairs as JobEvent.environment_entries() does: that was a tenth of the archive consumer's
    CPU per event, for one variable."""
    canonical = b"\0" + environment  # every entry now starts after a NUL
    start = max(canonical.rfind(b"\0" + _LOADED_ENTRY + b"="),
                canonical.rfind(b"\0" + _LOADED_ENTRY + b"\0"))
    if start < 0:
        return None
    entry = canonical[start + 1:canonical.index(b"\0", start + 1)]
    return entry[len(_LOADED_ENTRY) + 1:].decode("utf-8", "replace")


def event_modules(event: JobEvent) -> tuple[str, ...]:
    """schemas.job_modules.event_modules, with the LOADEDMODULES look-up above."""
    return job_modules(event.script, loaded_modules(event.environment))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def sidecar_document(event: JobEvent, files: Sequence[PlacedFile]) -> dict[str, Any]:
    """The sidecar's content; files are the job's data files where they are stored."""
    return {
        "format": FORMAT,
        **metadata_fields(event),
        "directives": dict(sorted(event.directives.items())),
        "submit_time_iso": _iso(event.submit_time),
        "read_time_iso": _iso(event.read_time),
        "environment_size": len(event.environment),
        "modules": list(event_modules(event)),
        "files": [
            {
                "role": f.role.value,
                "spool_name": f.spool_name,
                "path": str(f.path),
                "size": len(f.content),
                "sha256": f.sha256.hex(),
            }
            for f in files
        ],
    }


def render_sidecar(event: JobEvent, files: Sequence[PlacedFile]) -> bytes:
    """The sidecar file's bytes: one line of JSON, keys sorted, so the same event and files
    always give the same bytes (compact, so that the C encoder renders it: `jq .` indents).
    Sidecars written indented by earlier versions are read the same way (sidecar_job_key)."""
    document = sidecar_document(event, files)
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode()


def sidecar_job_key(content: bytes) -> str | None:
    """The job key recorded in a sidecar, or None when content is not one of our sidecars."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return None
    job_key = document.get("job_key")
    return job_key if isinstance(job_key, str) else None
