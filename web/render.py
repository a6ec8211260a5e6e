"""What the pages show, computed from records: highlighted scripts, environment rows, side-by-
side diffs, download names, paging cursors and the searches for a job's neighbours (pure;
Jinja2 escapes everything else)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import BashLexer, PerlLexer, PythonLexer, TextLexer

from query.criteria import Criteria
from query.record import Metadata
from query.terminal import decode
from schemas.model import REDACTED_MARKER

_INTERPRETER = re.compile(rb"^#!\s*(?:\S*/)?(?:env\s+(?:-\S+\s+)*)?(?P<name>[A-Za-z]+)")
_LEXERS: dict[str, type[Lexer]] = {
    "sh": BashLexer, "bash": BashLexer, "zsh": BashLexer, "ksh": BashLexer, "dash": BashLexer,
    "csh": BashLexer, "tcsh": BashLexer, "python": PythonLexer, "perl": PerlLexer}
_FORMATTER = HtmlFormatter(linenos="table", lineanchors="L", anchorlinenos=True,
                           cssclass="highlight")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# Pygments' lexers take ~1.5 ms per KiB of shell here (a 1 MiB script: 1.5 s of one core, the
# page's whole budget many times over); plain text, numbered and anchored alike, ~0.03 ms per
# KiB. Scripts' p95 is ~6 KB: only the rare giant is shown unhighlighted.
HIGHLIGHT_LIMIT = 64 * 1024
REDACTED = REDACTED_MARKER.decode()


def script_language(script: bytes) -> str:
    """The interpreter its shebang names (python3 -> python), or text."""
    shebang = _INTERPRETER.match(script)
    if shebang is None:
        return "text"
    name = shebang["name"].decode().rstrip("0123456789").lower()
    return name if name in _LEXERS else "text"


def is_highlighted(script: bytes) -> bool:
    """Whether highlighted_script colours the script's syntax (not above HIGHLIGHT_LIMIT)."""
    return len(script) <= HIGHLIGHT_LIMIT


def highlighted_script(script: bytes) -> str:
    """The script as escaped HTML with numbered, anchored lines (Pygments escapes every
    character of it), its syntax coloured unless it is larger than HIGHLIGHT_LIMIT."""
    language = script_language(script) if is_highlighted(script) else "text"
    lexer = _LEXERS.get(language, TextLexer)(stripnl=False, ensurenl=False)
    return str(highlight(decode(script), lexer, _FORMATTER))


def highlight_css() -> str:
    return str(_FORMATTER.get_style_defs(".highlight"))


@dataclass(frozen=True)
class EnvironmentRow:
    key: str
    value: str
    redacted: bool


def environment_rows(environment: Iterable[tuple[str, str]], redacted_keys: Iterable[str],
                     needle: str = "") -> list[EnvironmentRow]:
    """The variables whose name or value contains needle (case-insensitive), each marked if
    the producer redacted its value."""
    redacted = set(redacted_keys)
    wanted = needle.casefold()
    return [EnvironmentRow(key, value, key in redacted or value == REDACTED)
            for key, value in environment
            if wanted in key.casefold() or wanted in value.casefold()]


@dataclass(frozen=True)
class DiffRow:
    kind: str  # equal, replace, delete, insert
    old_number: int | None
    old_text: str | None
    new_number: int | None
    new_text: str | None


def side_by_side(old: bytes, new: bytes) -> list[DiffRow]:
    """The two scripts line against line: equal runs, and changed lines paired."""
    before, after = decode(old).splitlines(), decode(new).splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for kind, i1, i2, j1, j2 in matcher.get_opcodes():
        for offset in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + offset, j1 + offset
            # A replaced run longer on one side: its extra lines are deleted or inserted.
            shown = kind if (i < i2) == (j < j2) else ("delete" if i < i2 else "insert")
            rows.append(DiffRow(shown, i + 1 if i < i2 else None,
                                before[i] if i < i2 else None,
                                j + 1 if j < j2 else None, after[j] if j < j2 else None))
    return rows


def download_name(cluster: str, job_id: str, name: str) -> str:
    """A file name safe on every file system and in a header: CLUSTER-ID-NAME, anything but
    letters, digits, '.', '_' and '-' replaced, no leading dot."""
    return _UNSAFE_NAME.sub("_", f"{cluster}-{job_id}-{name}").lstrip(".") or "download"


def neighbour_searches(metadata: Metadata) -> list[tuple[Criteria, list[Any], bool]] | None:
    """The searches (criteria, position, oldest first) for the owner's previous and next job
    of the same name as first_of_each takes them (None for a job without a name); by the user
    claim where the scheduler established no owner. Each is bounded by the job's submit time
    as well as positioned after it: the bound lets Elasticsearch skip the shards of the months
    on the other side without searching them."""
    name = metadata.get("job_name")
    if not name:
        return None
    owner = metadata.get("owner")
    submitted = int(metadata["submit_time"])
    criteria = Criteria(cluster=metadata["cluster"], owner=owner,
                        user=None if owner else metadata.get("user"), name=name_glob(name))
    position = [submitted, metadata["job_key"]]
    return [(replace(criteria, until_ms=submitted + 1), position, False),
            (replace(criteria, since_ms=submitted), position, True)]


def name_glob(job_name: str) -> str:
    """A glob matching exactly job_name (query.criteria's glob: \\ escapes)."""
    return re.sub(r"([\\*?])", r"\\\1", job_name)


def cursor_text(position: Sequence[Any] | None) -> str | None:
    """A search_after position (submit time, job key) as a URL parameter."""
    if position is None:
        return None
    return f"{int(position[0])}:{position[1]}"


def cursor_position(text: str | None) -> list[Any] | None:
    """The position a cursor_text names; None for none or a malformed one (the first page)."""
    if not text:
        return None
    submitted, colon, key = text.partition(":")
    if not (colon and submitted.isdigit() and key):
        return None
    return [int(submitted), key]
