"""Environment policy: which submission environment entries leave the scheduler host, and how.

An entry is the bytes KEY=VALUE as the scheduler stored them. The KEY is everything before the
FIRST '=' (the /proc/PID/environ rule), so an '=' inside a value can never make a secret key look
harmless. Exclusion drops an entry; redaction keeps the key and replaces the value by
schemas.model.REDACTED_MARKER. Both patterns are matched with re.search against the key only.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


class _Treatment(enum.Enum):
    KEEP = enum.auto()
    EXCLUDE = enum.auto()
    REDACT = enum.auto()


# Bounds the per-policy memory when job environments carry unique keys.
_MAX_REMEMBERED_KEYS = 65536


@dataclass(frozen=True)
class EnvPolicy:
    exclude: re.Pattern[str] | None
    redact: re.Pattern[str] | None
    # The same few hundred keys (PATH, HOME, SLURM_*...) come back in every job: each key is
    # judged once per policy, which keeps the regexes off the per-entry hot path.
    _decisions: dict[bytes, _Treatment] = field(default_factory=dict, init=False,
                                                compare=False, repr=False)

    # The keys judged KEEP, so that "is every key of this job kept?" (nearly always yes) is one
    # set operation in C instead of a look-up per entry.
    _kept: set[bytes] = field(default_factory=set, init=False, compare=False, repr=False)

    def treatment(self, key: bytes) -> _Treatment:
        decision = self._decisions.get(key)
        if decision is None:
            text = key.decode("utf-8", "replace")
            if self.exclude is not None and self.exclude.search(text):
                decision = _Treatment.EXCLUDE
            elif self.redact is not None and self.redact.search(text):
                decision = _Treatment.REDACT
            else:
                decision = _Treatment.KEEP
            if len(self._decisions) < _MAX_REMEMBERED_KEYS:
                self._decisions[key] = decision
                if decision is _Treatment.KEEP:
                    self._kept.add(key)
        return decision

    def keeps_all(self, keys: Sequence[bytes]) -> bool:
        if self._kept.issuperset(keys):
            return True
        return all([self.treatment(key) is _Treatment.KEEP for key in keys])


@dataclass(frozen=True)
class FilteredEnvironment:
    entries: tuple[bytes, ...]
    redacted_keys: tuple[str, ...]  # each redacted key once, in environment order
    excluded_count: int
    keys: tuple[bytes, ...]  # entry_key() of each of `entries`


def entry_key(entry: bytes) -> bytes:
    """The KEY of a KEY=VALUE entry: everything before the first '=' (all of it if none)."""
    return entry.partition(b"=")[0]


def apply_policy(entries: Sequence[bytes], policy: EnvPolicy) -> FilteredEnvironment:
    keys = [entry.partition(b"=")[0] for entry in entries]
    if policy.keeps_all(keys):
        # Most jobs: nothing to hide, so no entry is rebuilt.
        return FilteredEnvironment(tuple(entries), (), 0, tuple(keys))
    kept: list[bytes] = []
    kept_keys: list[bytes] = []
    redacted: list[str] = []
    excluded = 0
    for entry, key in zip(entries, keys, strict=True):
        treatment = policy.treatment(key)
        if treatment is _Treatment.EXCLUDE:
            excluded += 1
            continue
        kept_keys.append(key)
        if treatment is _Treatment.KEEP:
            kept.append(entry)
        else:
            kept.append(key + b"=" + REDACTED_MARKER)
            text = key.decode("utf-8", "replace")
            if text not in redacted:
                redacted.append(text)
    return FilteredEnvironment(tuple(kept), tuple(redacted), excluded, tuple(kept_keys))


def canonical_environment(entries: Sequence[bytes]) -> bytes:
    """The schema's canonical form: every entry followed by one NUL byte."""
    return b"\0".join(entries) + b"\0" if entries else b""


def render_slurm_environment_file(entries: Sequence[bytes]) -> bytes:
    """Slurm's on-disk environment file for these entries: count header, NUL-terminated entries.

    Used for the spool_files copy, so the archived file carries the FILTERED environment.
    """
    return SLURM_ENV_COUNT.pack(len(entries)) + canonical_environment(entries)


def hidden_keys(entries: Sequence[bytes], policy: EnvPolicy) -> tuple[str, ...]:
    """Every key the policy excludes or redacts, once each, in environment order."""
    hidden: list[str] = []
    for entry in entries:
        key = entry_key(entry)
        if policy.treatment(key) is not _Treatment.KEEP:
            text = key.decode("utf-8", "replace")
            if text not in hidden:
                hidden.append(text)
    return tuple(hidden)


def environment_index(entries: Sequence[bytes],
                      keys: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
    """KEY -> the first KEY=VALUE entry with that key: built once per job for its look-ups.

    `keys` are the entries' entry_key()s when the caller has them already.
    """
    if keys is None:
        keys = [entry_key(entry) for entry in entries]
    # Reversed, so that the first entry of a repeated key is the one left in the dict; built
    # in C from the keys, without splitting every entry again.
    return dict(zip(reversed(keys), reversed(entries), strict=True))


def environment_value(index: Mapping[bytes, bytes], key: str) -> str | None:
    """The value of the first entry with exactly this key, decoded leniently.

    None when the key is absent, empty or redacted: a redacted value must not turn into
    metadata.
    """
    name = key.encode("utf-8")
    entry = index.get(name)
    value = entry[len(name) + 1:] if entry is not None else None  # an entry without '=': b""
    if not value or value == REDACTED_MARKER:
        return None
    return value.decode("utf-8", "replace")


def user_from_work_dir(work_dir: str | None) -> str | None:
    """The owner-looking component of a /home/<user>/... style directory, if there is one."""
    if not work_dir:
        return None
    match = _HOME_OWNER.match(work_dir if work_dir.endswith("/") else work_dir + "/")
    return match.group(1) if match else None


def user_from_environment(
    index: Mapping[bytes, bytes], work_dir: str | None
) -> tuple[str | None, UserSource]:
    """USER, then LOGNAME, then the /home/<user>/... component of work_dir."""
    for key, source in (("USER", UserSource.USER), ("LOGNAME", UserSource.LOGNAME)):
        value = environment_value(index, key)
        if value:
            return value, source
    owner = user_from_work_dir(work_dir)
    if owner is not None:
        return owner, UserSource.WORKDIR
    return None, UserSource.UNKNOWN
