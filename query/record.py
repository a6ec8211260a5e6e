"""One archived job as the CLI sees it, whichever backend it came from: pure values."""

from __future__ import annotations

import base64
import dataclasses
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.job_modules import LOADED_MODULES_VARIABLE, job_modules
from schemas.model import JobEvent, Scheduler, canonical_environment, parse_environment

_CONTENTS = frozenset({"script", "environment", "spool_files"})
# The metadata every backend holds: the event's fields but its byte contents, under the names
# of schemas.model.metadata_fields (the sidecar and the Elasticsearch document carry them).
METADATA_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(JobEvent) if f.name not in _CONTENTS)

Metadata = Mapping[str, Any]


@dataclass(frozen=True)
class JobRecord:
    """A job: its metadata, the exact script bytes, the environment (decoded, one value per
    key as a shell would see it) and its exact NUL-terminated entries (`show --env -0`), its
    modules and its spool files as the scheduler stored them (for --restore); location says
    where it was read (a path or a URL)."""

    metadata: Metadata
    script: bytes
    environment: tuple[tuple[str, str], ...]
    environment_entries: bytes
    modules: tuple[str, ...]
    spool_files: tuple[tuple[str, bytes], ...]
    location: str

    @property
    def job_key(self) -> str:
        return str(self.metadata["job_key"])

    @property
    def submit_time(self) -> int:
        return int(self.metadata["submit_time"])


def metadata_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata part of a sidecar or an Elasticsearch document, in METADATA_KEYS order,
    directives sorted by name (as the sidecar stores them; the document keeps the event's)."""
    metadata = {key: document.get(key) for key in METADATA_KEYS}
    metadata["directives"] = dict(sorted((metadata["directives"] or {}).items()))
    return metadata


def unique_environment(entries: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """One value per key, the last one, at the key's first position: what a shell sees and
    what the Elasticsearch document keeps."""
    return tuple(dict(entries).items())


def environment_from_canonical(canonical: bytes) -> tuple[tuple[str, str], ...]:
    return unique_environment(parse_environment(canonical))


def modules_of(script: bytes, environment: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The modules of a record whose sink stored none (written before sinks recorded them):
    computed as the consumers compute them, the last LOADEDMODULES counting."""
    loaded = None
    for key, value in environment:
        if key == LOADED_MODULES_VARIABLE:
            loaded = value
    return job_modules(script, loaded)


def slurm_environment_file(canonical: bytes) -> bytes:
    """Slurm's spool `environment`: a host-order 4-byte entry count, then the entries."""
    count = sum(1 for entry in canonical.split(b"\0") if entry)
    return struct.pack("=I", count) + canonical


def slurm_environment_entries(spool_file: bytes) -> bytes:
    """The entries of Slurm's spool `environment` (its 4-byte count dropped)."""
    return spool_file[4:]


def rebuilt_spool_files(metadata: Metadata, script: bytes,
                        environment_entries: bytes) -> tuple[tuple[str, bytes], ...]:
    """The spool files rebuilt from the exact script and environment entries, where the
    backend keeps no spool copies (Elasticsearch); the file archive keeps the files."""
    if metadata.get("scheduler") == Scheduler.SLURM.value:
        return (("script", script + b"\0"),
                ("environment", slurm_environment_file(environment_entries)))
    if metadata.get("scheduler") == Scheduler.GRIDENGINE.value:
        # job_scripts/<id>; the record, which holds the environment, is the file archive's.
        return (("script", script),)
    return ((f"{metadata['job_id']}.SC", script),)


def record_json(record: JobRecord) -> dict[str, Any]:
    """The whole record for --json: the metadata, the script (as text, with its exact bytes
    in script_b64 when they are not UTF-8), the environment (as a map, with its exact entries
    in environment_b64 when the map loses some) and the modules, as in the Elasticsearch
    document."""
    document: dict[str, Any] = dict(record.metadata)
    try:
        document["script"] = record.script.decode("utf-8")
    except UnicodeDecodeError:
        document["script"] = record.script.decode("utf-8", "replace")
        document["script_b64"] = base64.b64encode(record.script).decode("ascii")
    document["environment"] = dict(record.environment)
    if canonical_environment(record.environment) != record.environment_entries:
        document["environment_b64"] = base64.b64encode(record.environment_entries).decode("ascii")
    document["modules"] = list(record.modules)
    return document
