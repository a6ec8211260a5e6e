"""Environment policy: which submission environment entries leave the scheduler host, and how.

An entry is the bytes KEY=VALUE as the scheduler stored them. The KEY is everything before the
FIRST '=' (the /proc/PID/environ rule), so an '=' inside a value can never make a secret key look
harmless. Exclusion drops an entry; redaction keeps the key and replaces the value by
schemas.model.REDACTED_MARKER. The exclude and redact patterns are matched with re.search against
the key only; the value pattern (redact_values) is searched in the raw bytes of every value that
was not hidden by key, whatever its key, and each match is replaced by the marker (only its group
`secret` or `secret_...` when one took part, which keeps a URL and masks its password). A key
whose value was masked, wholly or in part, is a redacted key.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.model import REDACTED_MARKER, UserSource

# Keys, in any case. Not PWD or OLDPWD (directories), nor keys naming a file, directory or path
# (PASSWD_FILE=/etc/passwd; their values still go through the value patterns). Masked: these
# words anywhere in a key; these endings, which elsewhere in a key are parts of harmless words
# (PASSAGE, AUTHOR, PATH); and SLURM_JWT.
DEFAULT_REDACT = (
    r"(?i)^(?!(?:OLD)?PWD$|.*_(?:FILE|PATH|DIR|DIRECTORY)S?$)"
    r"(?:.*(?:TOKEN|SECRET|PASSWORD|PASSPHRASE|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY"
    r"|PRIVATE_?KEY)|.*(?:PASS|PWD|_PAT|_AUTH)$|SLURM_JWT$)"
)

# Values, whatever their key: one alternative per kind of secret.
DEFAULT_REDACT_VALUES = "|".join((
    # The password of a URL's user:password@ (RFC 3986 userinfo holds no '/'); the URL stays.
    r"://[^\s/:@]*:(?P<secret>[^\s/]+)@",
    # A PEM private key block (RSA, EC, OPENSSH, ENCRYPTED, PGP...), to its END line or the end.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?:[^-]|-(?!----END))*"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----)?",
    # GitHub personal, OAuth, app and refresh tokens; fine-grained personal access tokens.
    r"gh[pousr]_[A-Za-z0-9]{36,}",
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab personal access token
    r"xox[a-z]-[A-Za-z0-9-]{10,}",  # Slack bot, user, app... tokens
    # An AWS access key id, long-term or STS, not inside a longer word. The look-behind comes
    # after the first letter: every alternative starts with a literal, which lets re skip to
    # the positions where one could match (6x faster on a typical environment).
    r"A(?<![A-Z0-9]A)[KS]IA[A-Z0-9]{16}(?![A-Z0-9])",
    r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",  # a JSON Web Token
))

# Groups of a value pattern masked instead of the whole match: `secret`, or `secret_<anything>`
# (re allows a name once per pattern, and each alternative may need its own).
SECRET_GROUP = "secret"

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
# Bounds the memory of entries known to hold no value secret; when it is reached they are
# forgotten and remembered again as jobs come.
_MAX_REMEMBERED_ENTRY_BYTES = 8 * 1024 * 1024


class _CleanEntries:
    """Entries in whose value the value pattern found nothing, up to a byte budget."""

    def __init__(self) -> None:
        self.entries: set[bytes] = set()
        self.size = 0

    def remember(self, entry: bytes) -> None:
        self.remember_all((entry,))

    def remember_all(self, entries: Sequence[bytes]) -> None:
        size = sum(map(len, entries))
        if self.size + size > _MAX_REMEMBERED_ENTRY_BYTES:
            self.entries.clear()
            self.size = 0
        self.entries.update(entries)
        self.size += size


def _mask_match(match: re.Match[bytes]) -> bytes:
    secret = next((name for name in match.re.groupindex
                   if (name == SECRET_GROUP or name.startswith(SECRET_GROUP + "_"))
                   and match.start(name) >= 0), None)
    if secret is None:
        return REDACTED_MARKER
    offset = match.start()
    whole = match.group()
    return (whole[:match.start(secret) - offset] + REDACTED_MARKER
            + whole[match.end(secret) - offset:])


@dataclass(frozen=True)
class EnvPolicy:
    exclude: re.Pattern[str] | None
    redact: re.Pattern[str] | None
    redact_values: re.Pattern[bytes] | None = None
    # The same few hundred keys (PATH, HOME, SLURM_*...) come back in every job: each key is
    # judged once per policy, which keeps the regexes off the per-entry hot path.
    _decisions: dict[bytes, _Treatment] = field(default_factory=dict, init=False,
                                                compare=False, repr=False)

    # The keys judged KEEP, so that "is every key of this job kept?" (nearly always yes) is one
    # set operation in C instead of a look-up per entry.
    _kept: set[bytes] = field(default_factory=set, init=False, compare=False, repr=False)

    # A user's PATH, LS_COLORS, module lists... come back in every job they submit: each entry
    # is searched once, and "is every value of this job known clean?" is one set operation.
    _clean: _CleanEntries = field(default_factory=_CleanEntries, init=False, compare=False,
                                  repr=False)

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

    def masked_entry(self, entry: bytes, key: bytes) -> bytes:
        """The entry with every match of the value pattern in its value masked; the same
        object when nothing matched."""
        if self.redact_values is None or entry in self._clean.entries:
            return entry
        start = len(key) + 1
        value = entry[start:]
        if self.redact_values.search(value) is None:
            self._clean.remember(entry)
            return entry
        return entry[:start] + self.redact_values.sub(_mask_match, value)

    def values_clean(self, entries: Sequence[bytes], keys: Sequence[bytes]) -> bool:
        pattern = self.redact_values
        clean = self._clean
        if pattern is None or clean.entries.issuperset(entries):
            return True
        # Only the entries not known clean are searched, in this loop rather than through
        # masked_entry: most of a job's entries are known, and a call per entry cost more
        # than the look-up. The first value with a match ends it: the caller masks entry by
        # entry.
        known = clean.entries
        searched: list[bytes] = []
        for entry, key in zip(entries, keys, strict=True):
            if entry in known:
                continue
            if pattern.search(entry[len(key) + 1:]) is not None:
                clean.remember_all(searched)
                return False
            searched.append(entry)
        clean.remember_all(searched)  # one budget check and one set update per job
        return True


@dataclass(frozen=True)
class FilteredEnvironment:
    entries: tuple[bytes, ...]
    redacted_keys: tuple[str, ...]  # each redacted key once, in environment order
    excluded_count: int
    keys: tuple[bytes, ...]  # entry_key() of each of `entries`
    # Each excluded or redacted key once, in environment order: what must not show elsewhere.
    hidden_keys: tuple[str, ...]


def entry_key(entry: bytes) -> bytes:
    """The KEY of a KEY=VALUE entry: everything before the first '=' (all of it if none)."""
    return entry.partition(b"=")[0]


def apply_policy(entries: Sequence[bytes], policy: EnvPolicy) -> FilteredEnvironment:
    keys = [entry.partition(b"=")[0] for entry in entries]
    if policy.keeps_all(keys) and policy.values_clean(entries, keys):
        # Most jobs: nothing to hide, so no entry is rebuilt.
        return FilteredEnvironment(tuple(entries), (), 0, tuple(keys), ())
    kept: list[bytes] = []
    kept_keys: list[bytes] = []
    redacted: list[str] = []
    hidden: list[str] = []
    excluded = 0
    for entry, key in zip(entries, keys, strict=True):
        treatment = policy.treatment(key)
        if treatment is _Treatment.EXCLUDE:
            excluded += 1
            _add_once(hidden, key)
            continue
        kept_keys.append(key)
        masked = (policy.masked_entry(entry, key) if treatment is _Treatment.KEEP
                  else key + b"=" + REDACTED_MARKER)
        kept.append(masked)
        if masked is not entry:
            _add_once(redacted, key)
            _add_once(hidden, key)
    return FilteredEnvironment(tuple(kept), tuple(redacted), excluded, tuple(kept_keys),
                               tuple(hidden))


def _add_once(names: list[str], key: bytes) -> None:
    text = key.decode("utf-8", "replace")
    if text not in names:
        names.append(text)


def canonical_environment(entries: Sequence[bytes]) -> bytes:
    """The schema's canonical form: every entry followed by one NUL byte."""
    return b"\0".join(entries) + b"\0" if entries else b""


def render_slurm_environment_file(entries: Sequence[bytes]) -> bytes:
    """Slurm's on-disk environment file for these entries: count header, NUL-terminated entries.

    Used for the spool_files copy, so the archived file carries the FILTERED environment.
    """
    return SLURM_ENV_COUNT.pack(len(entries)) + canonical_environment(entries)


def environment_index(entries: Sequence[bytes],
                      keys: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
    """KEY -> the first KEY=VALUE entry with that key: built once per job for its look-ups.

    `keys` are the entries' entry_key()s when the caller has them already.
    """
    if keys is None:
        keys = [entry_key(entry) for entry in entries]
    # Reversed, so that the first entry of a repeated key is the one left in the dict; built
    # in C from the keys, without splitting every entry again.
    index = dict(zip(reversed(keys), reversed(entries), strict=True))
    if len(index) == len(keys) or all(len(k) < len(e) for k, e in zip(keys, entries,
                                                                         strict=True)):
        return index
    # An entry without '=' is no variable (getenv looks for "KEY="): it must not hide a
    # later KEY=VALUE. Rare, so only then is the index built again without such entries.
    return dict((k, e) for k, e in zip(reversed(keys), reversed(entries), strict=True)
                if len(k) < len(e))


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
