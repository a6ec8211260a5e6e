"""Avro single-object encoding of job events, with every shipped schema version readable.

Wire format (Avro specification, "Single-object encoding"): the two marker bytes C3 01, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
then the Avro binary body. The reader resolves the writer schema by that fingerprint among
the versions shipped in schemas/avsc/ and reads with the newest one, so no schema registry
service is needed.

From version 3 a spool file that is rebuilt exactly from the event's script or environment
travels as its recipe (schemas.spool_rebuild); decoding rebuilds it, so JobEvent.spool_files is
always the whole tuple of files, whichever version wrote the message.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

import fastavro
import fastavro.schema

from schemas.errors import CorruptEventError, NotSingleObjectEncodedError, UnknownSchemaError
from schemas.model import (
    JobEvent,
    OwnerSource,
    Scheduler,
    SpoolFile,
    UserSource,
    metadata_fields,
)
from schemas.spool_rebuild import SpoolFileRebuild, rebuild_of, rebuild_spool_file

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
CONTENT_TYPE = "application/vnd.sarchive.job-event+avro; encoding=single-object"
_VERSION_FILE = re.compile(r"^job_event\.v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    fingerprint: bytes
    parsed: Any  # fastavro's parsed schema; its structure is fastavro's business
    canonical_form: str
    # The version's SpoolFile has `rebuild` (version 3 on): rebuildable files are not carried.
    rebuilds_spool_files: bool


def _strip_logical_types(node: Any) -> Any:
    # Times travel as plain longs in milliseconds: dropping logicalType keeps fastavro from
    # converting to datetime and back on every message. The Parsing Canonical Form (and so the
    # fingerprint) ignores logicalType, so the wire format is unchanged.
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _spool_file_fields(raw: Mapping[str, Any]) -> set[str]:
    spool_files = next(f for f in raw["fields"] if f["name"] == "spool_files")
    return {f["name"] for f in spool_files["type"]["items"]["fields"]}


def load_schema_versions() -> Mapping[int, SchemaVersion]:
    """Every job event schema shipped as package data, by version number."""
    versions: dict[int, SchemaVersion] = {}
    for entry in resources.files("schemas").joinpath("avsc").iterdir():
        match = _VERSION_FILE.match(entry.name)
        if not match:
            continue
        raw = json.loads(entry.read_text(encoding="utf-8"))
        parsed = fastavro.parse_schema(_strip_logical_types(raw))
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
        # fastavro spells the CRC-64-AVRO value as the hex of its little-endian bytes,
        # which is exactly the byte order single-object encoding puts on the wire.
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        version = int(match.group(1))
        versions[version] = SchemaVersion(version, fingerprint, parsed, canonical,
                                          "rebuild" in _spool_file_fields(raw))
    return MappingProxyType(dict(sorted(versions.items())))


class JobEventCodec:
    """Encodes with one schema version (the newest by default) and decodes any shipped one."""

    def __init__(self, versions: Mapping[int, SchemaVersion] | None = None,
                 write_version: int | None = None) -> None:
        self.versions = versions if versions is not None else load_schema_versions()
        self.reader = self.versions[max(self.versions)]
        self.writer = self.versions[write_version if write_version is not None
                                    else max(self.versions)]
        self._by_fingerprint = {v.fingerprint: v for v in self.versions.values()}
        self._header = MAGIC + self.writer.fingerprint

    @property
    def schema_version(self) -> int:
        return self.writer.version

    def encode(self, event: JobEvent) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self.writer.parsed,
                                   to_record(event, self.writer.rebuilds_spool_files))
        return buffer.getvalue()

    def decode(self, data: bytes) -> JobEvent:
        return from_record(self.decode_record(data))

    def decode_record(self, data: bytes) -> dict[str, Any]:
        """The event as the reader schema's record (a dict), resolving the writer's version."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise NotSingleObjectEncodedError(
                f"not an Avro single-object encoded message ({len(data)} bytes,"
                f" starts {data[:2].hex() or 'empty'})"
            )
        fingerprint = data[2:HEADER_SIZE]
        writer = self._by_fingerprint.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(
                f"writer schema fingerprint {fingerprint.hex()} is not a shipped job event"
                f" version (known: {sorted(v.fingerprint.hex() for v in self.versions.values())})"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, self.reader.parsed)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeError, ...
            raise CorruptEventError(
                f"corrupt or truncated job event body (schema v{writer.version}): {exc!r}"
            ) from exc
        if body.tell() != len(data):
            raise CorruptEventError(
                f"{len(data) - body.tell()} trailing bytes after the job event body"
                f" (schema v{writer.version})"
            )
        if not isinstance(record, dict):
            raise CorruptEventError(f"job event body decoded to {type(record).__name__}")
        for spool_file in record["spool_files"]:
            if spool_file["rebuild"] != SpoolFileRebuild.CARRIED and spool_file["content"]:
                raise CorruptEventError(
                    f"spool file {spool_file['name']!r} is rebuilt ({spool_file['rebuild']})"
                    f" but also carries {len(spool_file['content'])} bytes"
                    f" (schema v{writer.version})"
                )
        return record


def to_record(event: JobEvent, rebuild_spool_files: bool = True) -> dict[str, Any]:
    """The event as a writer record; with rebuild_spool_files (version 3 on) a spool file that
    is rebuilt exactly from the script or environment carries its recipe, not its bytes."""
    record = metadata_fields(event)
    record["script"] = event.script
    record["environment"] = event.environment
    record["spool_files"] = [
        _spool_file_record(f, event.script, event.environment) if rebuild_spool_files
        else {"name": f.name, "content": f.content}
        for f in event.spool_files
    ]
    return record


def _spool_file_record(spool_file: SpoolFile, script: bytes,
                       environment: bytes) -> dict[str, Any]:
    rebuild = rebuild_of(spool_file.content, script, environment)
    content = spool_file.content if rebuild is SpoolFileRebuild.CARRIED else b""
    return {"name": spool_file.name, "content": content, "rebuild": rebuild.value}


def _spool_file(spool_file: Mapping[str, Any], script: bytes, environment: bytes) -> SpoolFile:
    rebuild = SpoolFileRebuild(spool_file["rebuild"])
    if rebuild is SpoolFileRebuild.CARRIED:
        return SpoolFile(spool_file["name"], spool_file["content"])
    return SpoolFile(spool_file["name"], rebuild_spool_file(rebuild, script, environment))


def from_record(record: Mapping[str, Any]) -> JobEvent:
    return JobEvent(
        cluster=record["cluster"],
        scheduler=Scheduler(record["scheduler"]),
        job_id=record["job_id"],
        array_job_id=record["array_job_id"],
        array_task_id=record["array_task_id"],
        job_key=record["job_key"],
        submit_time=record["submit_time"],
        read_time=record["read_time"],
        script=record["script"],
        script_size=record["script_size"],
        script_sha256=record["script_sha256"],
        script_truncated=record["script_truncated"],
        environment=record["environment"],
        redacted_keys=tuple(record["redacted_keys"]),
        spool_files=tuple(_spool_file(f, record["script"], record["environment"])
                          for f in record["spool_files"]),
        user=record["user"],
        user_source=UserSource(record["user_source"]),
        owner=record["owner"],
        owner_uid=record["owner_uid"],
        owner_source=OwnerSource(record["owner_source"]),
        job_name=record["job_name"],
        account=record["account"],
        partition=record["partition"],
        work_dir=record["work_dir"],
        time_limit=record["time_limit"],
        nodes=record["nodes"],
        ntasks=record["ntasks"],
        directives=MappingProxyType(dict(record["directives"])),
        producer_host=record["producer_host"],
        producer_version=record["producer_version"],
    )
