"""`sarchive diff`: two jobs' scripts as a unified diff and their environments compared by
key. Pure functions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from query.terminal import decode, safe_line, safe_text


@dataclass(frozen=True)
class EnvironmentDiff:
    added: tuple[tuple[str, str], ...]
    removed: tuple[tuple[str, str], ...]
    changed: tuple[tuple[str, str, str], ...]  # key, old value, new value


def environment_diff(old: Iterable[tuple[str, str]],
                     new: Iterable[tuple[str, str]]) -> EnvironmentDiff:
    before, after = dict(old), dict(new)
    return EnvironmentDiff(
        added=tuple((k, after[k]) for k in sorted(after.keys() - before.keys())),
        removed=tuple((k, before[k]) for k in sorted(before.keys() - after.keys())),
        changed=tuple((k, before[k], after[k]) for k in sorted(before.keys() & after.keys())
                      if before[k] != after[k]))


# difflib's matching takes time quadratic in the lines that differ: 20,000 lines with every
# tenth changed took 5 s, two hostile 8 MB scripts more than ten minutes. Past this many
# differing lines (both sides, their common first and last lines left out) the middle is one
# hunk, removed then added: still a correct unified diff, in linear time.
LINE_MATCH_LIMIT = 10_000
_CONTEXT = 3  # difflib.unified_diff's default


def script_diff(old: bytes, new: bytes, old_label: str, new_label: str) -> str:
    """A unified diff of the scripts, safe for a terminal (controls shown as escapes)."""
    before = decode(old).splitlines(keepends=True)
    after = decode(new).splitlines(keepends=True)
    labels = safe_line(old_label), safe_line(new_label)
    head, tail = _common_ends(before, after)
    if len(before) + len(after) - 2 * (head + tail) > LINE_MATCH_LIMIT:
        lines: Iterable[str] = _one_hunk(before, after, head, tail, labels)
    else:
        lines = difflib.unified_diff(before, after, fromfile=labels[0], tofile=labels[1])
    out = []
    for line in lines:
        text = safe_text(line)
        out.append(text if text.endswith("\n") else text + "\n\\ No newline at end of file\n")
    return "".join(out)


def _common_ends(before: list[str], after: list[str]) -> tuple[int, int]:
    """How many lines the two start with and end with alike, not overlapping."""
    shorter = min(len(before), len(after))
    head = 0
    while head < shorter and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < shorter - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    return head, tail


def _unified_range(start: int, length: int) -> str:
    """A hunk's range as difflib writes it: 1-based, the length omitted when 1."""
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _one_hunk(before: list[str], after: list[str], head: int, tail: int,
              labels: tuple[str, str]) -> Iterable[str]:
    """The unified diff whose one hunk removes the differing middle and adds the new one."""
    start = max(head - _CONTEXT, 0)
    old_end, new_end = len(before) - tail, len(after) - tail
    old_stop, new_stop = min(old_end + _CONTEXT, len(before)), min(new_end + _CONTEXT, len(after))
    yield f"--- {labels[0]}\n"
    yield f"+++ {labels[1]}\n"
    yield (f"@@ -{_unified_range(start, old_stop - start)}"
           f" +{_unified_range(start, new_stop - start)} @@\n")
    yield from (" " + line for line in before[start:head])
    yield from ("-" + line for line in before[head:old_end])
    yield from ("+" + line for line in after[head:new_end])
    yield from (" " + line for line in before[old_end:old_stop])


def environment_diff_text(diff: EnvironmentDiff) -> str:
    lines = [f"environment: {len(diff.added)} added, {len(diff.removed)} removed,"
             f" {len(diff.changed)} changed"]
    lines.extend(f"+ {safe_line(k)}={safe_line(v)}" for k, v in diff.added)
    lines.extend(f"- {safe_line(k)}={safe_line(v)}" for k, v in diff.removed)
    lines.extend(f"~ {safe_line(k)}: {safe_line(a)} -> {safe_line(b)}"
                 for k, a, b in diff.changed)
    return "\n".join(lines) + "\n"
