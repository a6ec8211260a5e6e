"""What `sarchive search` and `sarchive modules` select, and the file archive's matching of
one job against it: pure functions, the same rules as es_query's Elasticsearch queries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from query.record import Metadata

_RELATIVE = re.compile(r"^(?P<count>[0-9]+)(?P<unit>[smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
# What follows a module's name or version prefix in a longer module string: gcc matches
# gcc/9.3.0, gcc/9 matches gcc/9.3.0 and gcc/9-cuda, never gcc/90 or gccgo.
MODULE_SEPARATORS = ("/", ".", "-")

# Words as Elasticsearch's standard analyzer (Unicode word boundaries) cuts them, closely
# enough for scripts: letters, digits and _ runs, kept whole across '.' and "'" between word
# characters (2023.1, gmx_mpi, foo.sh), ':' between letters, ',' and ';' between digits.
_WORD = re.compile(r"\w+(?:(?:[.'\u2019]|(?<=[^\W\d_]):(?=[^\W\d_])|(?<=\d)[,;](?=\d))\w+)*")


class CriteriaError(ValueError):
    """A criterion cannot be understood: a usage error."""


@dataclass(frozen=True)
class Criteria:
    cluster: str | None = None
    user: str | None = None  # the user the submission claims
    owner: str | None = None  # the owner as the scheduler knows it
    account: str | None = None
    partition: str | None = None
    name: str | None = None  # a glob of * and ?
    since_ms: int | None = None  # submitted at or after
    until_ms: int | None = None  # submitted before
    module: str | None = None
    text: str | None = None  # words that must all be in the script
    env: tuple[tuple[str, str | None], ...] = ()  # KEY (set) or KEY=VALUE


def parse_env_criterion(text: str) -> tuple[str, str | None]:
    key, equals, value = text.partition("=")
    if not key:
        raise CriteriaError(f"--env {text!r}: give KEY or KEY=VALUE")
    return key, value if equals else None


def parse_when(text: str, now: datetime, zone: tzinfo, *, end_of_day: bool = False) -> int:
    """Epoch ms of a relative age (30m, 12h, 7d, 2w: that long before now), a date
    (YYYY-MM-DD: its midnight in zone, or the next midnight with end_of_day, so that
    --until 2024-06-30 includes that day) or an ISO date and time (zone if it names none)."""
    relative = _RELATIVE.match(text)
    if relative is not None:
        seconds = int(relative["count"]) * _UNIT_SECONDS[relative["unit"]]
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        return int(((start + timedelta(days=1)) if end_of_day else start).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CriteriaError(f"{text!r} is not a date (YYYY-MM-DD), a date and time"
                            " (YYYY-MM-DDTHH:MM) or an age (30m, 12h, 7d, 2w)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A job-name glob: * any run, ? one character, \\ escapes the next; nothing else is
    special (the same as Elasticsearch's wildcard query)."""
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def module_matches(spec: str, module: str) -> bool:
    """Whether module (gcc/9.3.0) is spec (gcc, gcc/9, gcc/9.3.0) or a version of it."""
    return module == spec or any(module.startswith(spec + separator)
                                 for separator in MODULE_SEPARATORS)


def words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


# Criteria matched by equality with the metadata field of the same name.
EXACT_FIELDS = ("cluster", "user", "owner", "account", "partition")
# For each exact criterion, the byte strings one of which a matching sidecar holds.
RawNeedles = tuple[tuple[bytes, ...], ...]


def raw_needles(criteria: Criteria) -> RawNeedles:
    """Each wanted cluster, user, owner, account or partition as a JSON string: as the archive
    consumer writes it (json.dumps, ensure_ascii=False, UTF-8) and \\u-escaped."""
    return tuple((json.dumps(wanted, ensure_ascii=False).encode("utf-8"),
                  json.dumps(wanted).encode("ascii"))
                 for wanted in (getattr(criteria, f) for f in EXACT_FIELDS)
                 if wanted is not None)


def may_match_raw(needles: RawNeedles, raw: bytes) -> bool:
    """False when a sidecar's bytes cannot be a job the exact criteria want: the quick test
    that spares parsing the JSON of most sidecars of a user's or an account's search."""
    return all(any(needle in raw for needle in forms) for forms in needles)


def metadata_matches(criteria: Criteria, metadata: Metadata) -> bool:
    """The criteria the metadata alone answers (the cheap first pass over sidecars)."""
    for field in EXACT_FIELDS:
        wanted = getattr(criteria, field)
        if wanted is not None and metadata.get(field) != wanted:
            return False
    submitted = int(metadata["submit_time"])
    if criteria.since_ms is not None and submitted < criteria.since_ms:
        return False
    if criteria.until_ms is not None and submitted >= criteria.until_ms:
        return False
    if criteria.name is not None:
        name = metadata.get("job_name")
        if name is None or not glob_regex(criteria.name).match(name):
            return False
    return True


def needs_contents(criteria: Criteria) -> bool:
    """Whether matching needs the script or the environment, not only the sidecar."""
    return criteria.text is not None or bool(criteria.env)


def contents_match(criteria: Criteria, script: bytes,
                   environment: Mapping[str, str], modules: Iterable[str]) -> bool:
    if criteria.module is not None and not any(module_matches(criteria.module, m)
                                               for m in modules):
        return False
    if criteria.text is not None and not words(criteria.text) <= words(
            script.decode("utf-8", "replace")):
        return False
    for key, value in criteria.env:
        if key not in environment or (value is not None and environment[key] != value):
            return False
    return True
