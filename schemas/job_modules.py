"""The environment modules a job loaded: a pure function of its script and its environment.

Two sources, merged: the script's `module load|add|try-load|try-add|swap|switch` and Lmod's
`ml` commands, and the modules loaded in the shell that ran `sbatch`/`qsub` (LOADEDMODULES,
colon-separated, as Lmod and Environment Modules both set it). Names are kept exactly as
written (`gromacs/2023.1`, `GCC`): no case folding, no version resolution.

The script is read as a shell would split it into commands, to the extent that needs no
shell: comment lines and inline ` #` comments are dropped, `\\` continuation lines joined,
and lines split at `;`, `&&`, `||`, `|` and `&`; only a command that starts a (sub)command
counts (`echo "module load x"` does not). Words a shell would expand (`$MOD`, backticks,
globs, braces) cannot be resolved and are skipped. One pass over the text: linear time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from schemas.model import REDACTED_MARKER, JobEvent

LOADED_MODULES_VARIABLE = "LOADEDMODULES"

# `module <subcommand>`s that load what they name (swap/switch: the last name, see below).
_LOADING = frozenset({"load", "add", "try-load", "try-add"})
_SWAPPING = frozenset({"swap", "switch", "sw"})  # sw: Lmod's short form
# Lmod's `ml` sub-commands: a first word among these is a command, not a module to load.
# Only `ml load`, `ml add`, ... and `ml swap` load anything.
_ML_SUBCOMMANDS = frozenset({
    "add", "avail", "av", "category", "cat", "check-syntax", "del", "delete", "describe",
    "disable", "getdefault", "gd", "help", "is-avail", "is-loaded", "key", "keyword", "list",
    "load", "mcc", "mt", "overview", "ov", "purge", "record", "refresh", "reload", "remove",
    "restore", "rm", "save", "savelist", "sl", "sh", "show", "spider", "sw", "swap", "switch",
    "table", "tablelist", "try-add", "try-load", "unload", "unuse", "update", "use", "whatis",
})
# Shell words that may precede a command without being it: `if ...; then module load x`.
_COMMAND_PREFIXES = frozenset({"then", "do", "else", "{", "!", "time", "command"})
# Command separators; `&` only as a background marker, not inside `2>&1` or `&>file`.
_SEPARATORS = re.compile(r"&&|\|\||[;|]|(?<![<>])&(?!>)")
# `#` starts a comment at the start of a line or after a blank, as in the shell.
_COMMENT = re.compile(r"(?:^|(?<=\s))#")
# Characters a shell would expand or interpret: a word holding one names no module as written.
_UNRESOLVABLE = frozenset("$`\"'\\<>(){}[]*?")
# A redirection operator standing alone takes the next word as its target: `> /dev/null`.
_REDIRECTION = re.compile(r"\d*(?:>>?|<|&>>?|>&|<&)")


def job_modules(script: bytes, loaded_modules: str | None) -> tuple[str, ...]:
    """Every module the job loaded, sorted and de-duplicated: the script's and the
    submission's. loaded_modules is the LOADEDMODULES value, or None if it was not set."""
    return tuple(sorted(set(script_modules(script)) | set(submission_modules(loaded_modules))))


def event_modules(event: JobEvent) -> tuple[str, ...]:
    """job_modules of an event: its script and its environment's LOADEDMODULES (a repeated
    variable keeps its last value, as a shell reading the environment would)."""
    loaded: str | None = None
    for key, value in event.environment_entries():
        if key == LOADED_MODULES_VARIABLE:
            loaded = value
    return job_modules(event.script, loaded)


def submission_modules(loaded_modules: str | None) -> tuple[str, ...]:
    """The items of a LOADEDMODULES value; a value the producer redacted names none."""
    if loaded_modules is None or loaded_modules == REDACTED_MARKER.decode():
        return ()
    return tuple(item for item in (part.strip() for part in loaded_modules.split(":")) if item)


def script_modules(script: bytes) -> tuple[str, ...]:
    """The modules the script's commands load, in order of appearance, repeats kept."""
    text = script.decode("utf-8", "replace")
    if "module" not in text and "ml" not in text:  # the common script without modules
        return ()
    return tuple(name for command in _commands(text) for name in _loaded_by(command))


def _logical_lines(text: str) -> Iterator[str]:
    """The script's lines without comments, `\\`-continued lines joined."""
    pending: list[str] = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        comment = _COMMENT.search(line) if "#" in line else None  # most lines have none
        if comment is not None:
            line = line[:comment.start()]
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        if pending:
            pending.append(line)
            line = " ".join(pending)
            pending = []
        yield line
    if pending:
        yield " ".join(pending)


def _commands(text: str) -> Iterator[list[str]]:
    """The words of every simple command that could be a module command."""
    for line in _logical_lines(text):
        if "module" not in line and "ml" not in line:
            continue
        for part in _SEPARATORS.split(line):
            words = part.split()
            start = 0
            while start < len(words) and words[start] in _COMMAND_PREFIXES:
                start += 1
            if start < len(words) and words[start] in ("module", "ml"):
                yield words[start:]


def _loaded_by(words: list[str]) -> list[str]:
    """The modules one `module ...` or `ml ...` command loads."""
    command, arguments = words[0], _arguments(words[1:])
    if command == "ml" and arguments and arguments[0] not in _ML_SUBCOMMANDS:
        # `ml a -b c`: load a and c, unload b.
        return _names(arguments)
    # `module [options] <subcommand> [options] names...`, `ml <subcommand> names...`.
    positional = [word for word in arguments if not word.startswith("-")]
    if not positional:
        return []
    if positional[0] in _LOADING:
        return _names(positional[1:])
    if positional[0] in _SWAPPING:
        return _swapped_in(positional[1:])
    return []


def _arguments(words: list[str]) -> list[str]:
    """The words after the command, without redirections and `--long` options (a `-x` word
    is kept: for `ml` it means unload)."""
    kept: list[str] = []
    skip_target = False
    for word in words:
        if skip_target:
            skip_target = False
        elif _REDIRECTION.fullmatch(word):
            skip_target = True
        elif not word.startswith("--"):
            kept.append(word)
    return kept


def _swapped_in(names: list[str]) -> list[str]:
    """`swap a b` loads b (and unloads a); `swap b` loads b in place of the loaded version."""
    return _names(names[-1:])


def _names(words: list[str]) -> list[str]:
    return [name for name in (_name(word) for word in words if not word.startswith("-"))
            if name]


def _name(word: str) -> str:
    """The module a word names as written, or "" when the shell would change it first."""
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        word = word[1:-1]
    if not word or any(char in _UNRESOLVABLE for char in word):
        return ""
    return word
