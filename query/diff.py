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


def script_diff(old: bytes, new: bytes, old_label: str, new_label: str) -> str:
    """A unified diff of the scripts, safe for a terminal (controls shown as escapes)."""
    lines = difflib.unified_diff(decode(old).splitlines(keepends=True),
                                 decode(new).splitlines(keepends=True),
                                 fromfile=safe_line(old_label), tofile=safe_line(new_label))
    out = []
    for line in lines:
        text = safe_text(line)
        out.append(text if text.endswith("\n") else text + "\n\\ No newline at end of file\n")
    return "".join(out)


def environment_diff_text(diff: EnvironmentDiff) -> str:
    lines = [f"environment: {len(diff.added)} added, {len(diff.removed)} removed,"
             f" {len(diff.changed)} changed"]
    lines.extend(f"+ {safe_line(k)}={safe_line(v)}" for k, v in diff.added)
    lines.extend(f"- {safe_line(k)}={safe_line(v)}" for k, v in diff.removed)
    lines.extend(f"~ {safe_line(k)}: {safe_line(a)} -> {safe_line(b)}"
                 for k, a, b in diff.changed)
    return "\n".join(lines) + "\n"
