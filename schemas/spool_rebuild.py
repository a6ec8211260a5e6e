"""Spool files rebuilt exactly from an event's script and environment (schema version 3).

Slurm's `script` file is the script plus one NUL and its `environment` file a 4-byte entry
count in the producer host's byte order followed by the canonical environment; Torque's `.SC`
is the script itself. Such a file travels as a recipe instead of its bytes. A recipe is chosen
only when rebuilding with it gives the file's bytes exactly, so a decoded event's spool files
are byte for byte the ones the producer had, whoever built the event. Pure functions of bytes.
"""

from __future__ import annotations

import enum
import struct

_COUNT_LE = struct.Struct("<I")
_COUNT_BE = struct.Struct(">I")


class SpoolFileRebuild(enum.StrEnum):
    """The schema's SpoolFileRebuild symbols: how a spool file's bytes are obtained."""

    CARRIED = "CARRIED"
    SCRIPT = "SCRIPT"
    SCRIPT_NUL = "SCRIPT_NUL"
    ENVIRONMENT_COUNT_LE = "ENVIRONMENT_COUNT_LE"
    ENVIRONMENT_COUNT_BE = "ENVIRONMENT_COUNT_BE"


def _environment_count(environment: bytes) -> int:
    # The canonical environment terminates every entry by one NUL (an empty entry included).
    return environment.count(b"\0")


def rebuild_spool_file(rebuild: SpoolFileRebuild, script: bytes, environment: bytes) -> bytes:
    """The bytes of a spool file that is not CARRIED, from the event's script and environment."""
    if rebuild is SpoolFileRebuild.SCRIPT:
        return script
    if rebuild is SpoolFileRebuild.SCRIPT_NUL:
        return script + b"\0"
    if rebuild is SpoolFileRebuild.ENVIRONMENT_COUNT_LE:
        return _COUNT_LE.pack(_environment_count(environment)) + environment
    if rebuild is SpoolFileRebuild.ENVIRONMENT_COUNT_BE:
        return _COUNT_BE.pack(_environment_count(environment)) + environment
    raise ValueError(f"a {rebuild} spool file is not rebuilt: its content is carried")


def rebuild_of(content: bytes, script: bytes, environment: bytes) -> SpoolFileRebuild:
    """The recipe that rebuilds `content` exactly from script and environment, else CARRIED.

    Compares in place (lengths, then prefix and suffix), without building a candidate file.
    """
    size = len(content)
    if size == len(script) and content == script:
        return SpoolFileRebuild.SCRIPT
    if size == len(script) + 1 and content.endswith(b"\0") and content.startswith(script):
        return SpoolFileRebuild.SCRIPT_NUL
    if size == _COUNT_LE.size + len(environment) and content.endswith(environment):
        count = _environment_count(environment)
        if count < 1 << 32:
            if content.startswith(_COUNT_LE.pack(count)):
                return SpoolFileRebuild.ENVIRONMENT_COUNT_LE
            if content.startswith(_COUNT_BE.pack(count)):
                return SpoolFileRebuild.ENVIRONMENT_COUNT_BE
    return SpoolFileRebuild.CARRIED
