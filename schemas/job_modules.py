"""PLACEHOLDER, to be replaced at merge by the modules branch's schemas/job_modules.py (same
signature): the environment modules a job loads, as written. Just enough for the query CLI's
fallback on sidecars without a "modules" key: `module load|add` and `ml` lines of the
script, and LOADEDMODULES of the environment."""

from __future__ import annotations

import re

_LOAD = re.compile(rb"^\s*(?:module\s+(?:load|add)|ml)\s+(?P<names>[^;&|#\n]+)", re.MULTILINE)


def job_modules(script: bytes, environment: bytes) -> tuple[str, ...]:
    """Sorted unique module strings (gromacs/2023.1) from the script's load lines and the
    environment's LOADEDMODULES (environment: NUL-terminated KEY=VALUE entries)."""
    found: set[str] = set()
    for match in _LOAD.finditer(script):
        found.update(word.decode("utf-8", "replace") for word in match["names"].split()
                     if not word.startswith(b"-") and word != b"purge")
    for entry in environment.split(b"\0"):
        if entry.startswith(b"LOADEDMODULES="):
            found.update(m.decode("utf-8", "replace")
                         for m in entry.partition(b"=")[2].split(b":") if m)
    return tuple(sorted(found))
