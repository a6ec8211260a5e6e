"""Environment policy: which submission environment entries leave the scheduler host, and how.

An entry is the bytes KEY=VALUE as the scheduler stored them. The KEY is everything before the
FIRST '=' (the /proc/PID/environ rule), so an '=' inside a value can never make a secret key look
harmless. Exclusion drops an entry; redaction keeps the key and replaces the value by
schemas.model.REDACTED_MARKER. Both patterns are matched with re.search against the key only.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.model import REDACTED_MARKER, UserSource

DEFAULT_REDACT = (
    r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|CREDENTIAL|PRIVATE_?KEY|AWS_SECRET|AUTH)"
)

# Slurm writes the entry count with write(fd, &count, 4): host byte order (verified on the
# real 22.05 spool of an x86-64 host: 58 entries stored as 3a 00 00 00). The producer runs on
# the scheduler host, so native order reads and re-creates the file exactly.
SLURM_ENV_COUNT = struct.Struct("=I")

# A path component that can be a login name, after a directory that holds home directories.
_HOME_OWNER = re.compile(
    r"^/(?:[^/]+/)*?(?:home|homes|users|Users)/([A-Za-z_][A-Za-z0-9_.-]{0,31})/"
)


@dataclass(frozen=True)
class EnvPolicy:
    exclude: re.Pattern[str] | None
    redact: re.Pattern[str] | None


@dataclass(frozen=True)
class FilteredEnvironment:
    entries: tuple[bytes, ...]
    redacted_keys: tuple[str, ...]  # each redacted key once, in environment order
    excluded_count: int


def entry_key(entry: bytes) -> bytes:
    """The KEY of a KEY=VALUE entry: everything before the first '=' (all of it if none)."""
    return entry.partition(b"=")[0]


def _key_text(entry: bytes) -> str:
    return entry_key(entry).decode("utf-8", "replace")


def apply_policy(entries: Sequence[bytes], policy: EnvPolicy) -> FilteredEnvironment:
    kept: list[bytes] = []
    redacted: list[str] = []
    excluded = 0
    for entry in entries:
        key = _key_text(entry)
        if policy.exclude is not None and policy.exclude.search(key):
            excluded += 1
            continue
        if policy.redact is not None and policy.redact.search(key):
            kept.append(entry_key(entry) + b"=" + REDACTED_MARKER)
            if key not in redacted:
                redacted.append(key)
            continue
        kept.append(entry)
    return FilteredEnvironment(tuple(kept), tuple(redacted), excluded)


def canonical_environment(entries: Sequence[bytes]) -> bytes:
    """The schema's canonical form: every entry followed by one NUL byte."""
    return b"".join(entry + b"\0" for entry in entries)


def render_slurm_environment_file(entries: Sequence[bytes]) -> bytes:
    """Slurm's on-disk environment file for these entries: count header, NUL-terminated entries.

    Used for the spool_files copy, so the archived file carries the FILTERED environment.
    """
    return SLURM_ENV_COUNT.pack(len(entries)) + canonical_environment(entries)


def hidden_keys(entries: Sequence[bytes], policy: EnvPolicy) -> tuple[str, ...]:
    """Every key the policy excludes or redacts, once each, in environment order."""
    hidden: list[str] = []
    for entry in entries:
        key = _key_text(entry)
        if key not in hidden and any(
            pattern is not None and pattern.search(key)
            for pattern in (policy.exclude, policy.redact)
        ):
            hidden.append(key)
    return tuple(hidden)


def environment_value(entries: Sequence[bytes], key: str) -> str | None:
    """The value of the first entry with exactly this key, decoded leniently.

    None when the key is absent, empty or redacted: a redacted value must not turn into
    metadata.
    """
    wanted = key.encode("utf-8")
    for entry in entries:
        entry_name, sep, value = entry.partition(b"=")
        if sep and entry_name == wanted:
            if not value or value == REDACTED_MARKER:
                return None
            return value.decode("utf-8", "replace")
    return None


def user_from_work_dir(work_dir: str | None) -> str | None:
    """The owner-looking component of a /home/<user>/... style directory, if there is one."""
    if not work_dir:
        return None
    match = _HOME_OWNER.match(work_dir if work_dir.endswith("/") else work_dir + "/")
    return match.group(1) if match else None


def user_from_environment(
    entries: Sequence[bytes], work_dir: str | None
) -> tuple[str | None, UserSource]:
    """USER, then LOGNAME, then the /home/<user>/... component of work_dir."""
    for key, source in (("USER", UserSource.USER), ("LOGNAME", UserSource.LOGNAME)):
        value = environment_value(entries, key)
        if value:
            return value, source
    owner = user_from_work_dir(work_dir)
    if owner is not None:
        return owner, UserSource.WORKDIR
    return None, UserSource.UNKNOWN
