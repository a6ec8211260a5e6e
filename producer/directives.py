"""#SBATCH / #PBS / #$ directives from a job script, as the schema's `directives` map.

Slurm and Torque: like sbatch and qsub, only the header counts: directive lines up to the first
command, skipping the shebang, blank lines and other comments. A directive line starts in
column one with the prefix and whitespace, then holds one or more options, shell-like quoted,
up to a '#' comment:
  --long=value   --long value   -J value   -Jvalue   -HJvalue (clustered short flags)
Short options are mapped to their long names; a long option is kept as written (without the
dashes; getopt's unique-prefix abbreviations are not expanded). Flags map to "". PBS `-l`
resource lists are merged into one key per resource: "l.walltime", "l.nodes", ...
A repeated option keeps its last value. A line that cannot be parsed (unknown short option,
missing value, unbalanced quote, stray word) is skipped as a whole; nothing here raises.

Grid Engine (`#$`), as SGE 8.1.9's qsub reads them (each rule tried on the real one): every
line of the script that starts with `#$` in column one counts, after the first command too,
whitespace after the prefix or not; the first '#' after the prefix ends it, inside quotes or
a word too (`-N x#y` and `-N 'x#y'` name the job "x"); quotes group and are removed, an
unterminated one runs to the end of the line. qsub's options have one dash and are kept under
their own names ("N", "A", "P", "q", "t", "wd", "S", ...; flags such as "cwd" map to "");
`-pe` takes two words, kept as one value ("smp 4"); `-l` lists merge into "l.<resource>", or
"soft.l.<resource>" after a `-soft` on the same line (up to a `-hard`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.model import Scheduler

Options = list[tuple[str, str]]


@dataclass(frozen=True)
class _Dialect:
    prefix: bytes
    short_with_value: Mapping[str, str]  # letter -> long name; the option takes a value
    short_flags: Mapping[str, str]  # letter -> long name; the option takes no value
    long_options: bool
    # Long options that never take the next word as their value: flags, and options whose
    # argument is optional (getopt binds those only in the --name=value form).
    long_without_separate_value: frozenset[str]
    resource_option: str | None  # the short option whose value is a resource list


_SBATCH = _Dialect(
    prefix=b"#SBATCH",
    short_with_value={
        "a": "array", "A": "account", "b": "begin", "B": "extra-node-info",
        "c": "cpus-per-task", "C": "constraint", "d": "dependency", "D": "chdir",
        "e": "error", "F": "nodefile", "G": "gpus", "i": "input", "J": "job-name",
        "L": "licenses", "m": "distribution", "M": "clusters", "n": "ntasks", "N": "nodes",
        "o": "output", "p": "partition", "q": "qos", "S": "core-spec", "t": "time",
        "w": "nodelist", "x": "exclude",
    },
    short_flags={
        "h": "help", "H": "hold", "I": "immediate", "k": "no-kill", "O": "overcommit",
        "Q": "quiet", "s": "oversubscribe", "u": "usage", "v": "verbose", "V": "version",
        "W": "wait",
    },
    long_options=True,
    long_without_separate_value=frozenset({
        "contiguous", "exclusive", "get-user-env", "help", "hold", "ignore-pbs", "immediate",
        "nice", "no-kill", "no-requeue", "overcommit", "oversubscribe", "parsable",
        "propagate", "quiet", "reboot", "requeue", "spread-job", "test-only", "usage",
        "use-min-nodes", "verbose", "version", "wait", "x11",
    }),
    resource_option=None,
)

_PBS = _Dialect(
    prefix=b"#PBS",
    short_with_value={
        "a": "execution-time", "A": "account", "b": "b", "c": "checkpoint", "C": "C",
        "d": "workdir", "D": "root-dir", "e": "error", "F": "arguments", "j": "join",
        "k": "keep", "l": "l", "L": "L", "m": "mail-options", "M": "mail-users", "N": "name",
        "o": "output", "p": "priority", "P": "proxy-user", "q": "queue", "r": "rerunnable",
        "S": "shell", "t": "array", "T": "T", "u": "user-list", "v": "variables",
        "W": "attributes", "w": "w",
    },
    short_flags={
        "f": "fault-tolerant", "h": "hold", "I": "interactive", "n": "node-exclusive",
        "V": "export-all", "x": "x", "X": "x11", "z": "quiet",
    },
    long_options=False,
    long_without_separate_value=frozenset(),
    resource_option="l",
)

_DIALECTS: Mapping[str, _Dialect] = {Scheduler.SLURM: _SBATCH, Scheduler.TORQUE: _PBS}


_SHELL_SPECIAL = frozenset("'\"#")


def _split_words(text: str, *, open_quote_ends_line: bool = False) -> list[str] | None:
    """Shell-like words: whitespace separated, quotes group and are removed, '#' starts a
    comment between words. None for an unbalanced quote, unless open_quote_ends_line (qsub's
    reading: the quote runs to the end of the line)."""
    if _SHELL_SPECIAL.isdisjoint(text):
        return text.split()  # splits on str.isspace() runs, like the loop below
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote: str | None = None
    for char in text:
        if quote is not None:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "'\"":
            quote = char
            in_word = True
        elif char.isspace():
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
        elif char == "#" and not in_word:
            break
        else:
            current.append(char)
            in_word = True
    if quote is not None and not open_quote_ends_line:
        return None
    if in_word:
        words.append("".join(current))
    return words


def _resource_options(name: str, value: str) -> Options:
    options: Options = []
    for resource in value.split(","):
        key, _, amount = resource.partition("=")
        if key:
            options.append((f"{name}.{key}", amount))
    return options


def _short_options(cluster: str, words: list[str], dialect: _Dialect) -> Options | None:
    """One '-xyz' word (getopt clustering); may take the next word as the last one's value."""
    options: Options = []
    for position, letter in enumerate(cluster):
        if letter in dialect.short_flags:
            options.append((dialect.short_flags[letter], ""))
            continue
        if letter not in dialect.short_with_value:
            return None
        value = cluster[position + 1:]
        if not value:
            if not words:
                return None
            value = words.pop(0)
        if letter == dialect.resource_option:
            options.extend(_resource_options(letter, value))
        else:
            options.append((dialect.short_with_value[letter], value))
        return options
    return options


def _line_options(words: list[str], dialect: _Dialect) -> Options | None:
    options: Options = []
    while words:
        word = words.pop(0)
        if word == "--":
            break
        if word.startswith("--") and dialect.long_options:
            name, has_value, value = word[2:].partition("=")
            if not name:
                return None
            if (not has_value and name not in dialect.long_without_separate_value
                    and words and not words[0].startswith("-")):
                value = words.pop(0)
            options.append((name, value))
        elif word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            short = _short_options(word[1:], words, dialect)
            if short is None:
                return None
            options.extend(short)
        else:
            return None
    return options


# Scheduler.GRIDENGINE's value (schema version 3); the dialects are looked up by value.
GRIDENGINE = "gridengine"
_QSUB_PREFIX = b"#$"
# qsub's (8.1.9) options: those taking no value, and those taking one; -pe takes two.
_QSUB_FLAGS = frozenset({"clear", "cwd", "h", "hard", "notify", "soft", "terse", "V", "verify"})
_QSUB_WITH_VALUE = frozenset({
    "a", "A", "ac", "ar", "b", "binding", "c", "ckpt", "C", "dc", "display", "dl", "e",
    "hold_jid", "hold_jid_ad", "i", "j", "js", "jsv", "l", "m", "M", "masterq", "N", "now",
    "o", "p", "P", "pty", "q", "r", "R", "S", "sc", "shell", "sync", "t", "tc", "v", "w", "wd",
})
_QSUB_TWO_VALUES = frozenset({"pe"})


def _qsub_line(words: list[str]) -> Options | None:
    """The options of one #$ line; None if it does not parse (unknown option, missing value,
    stray word)."""
    options: Options = []
    soft = False  # qsub's -soft holds up to a -hard or the end of its line
    while words:
        word = words.pop(0)
        name = word[1:]
        if not word.startswith("-") or not name:
            return None
        if name in _QSUB_FLAGS:
            soft = name == "soft" or (soft and name != "hard")
            options.append((name, ""))
            continue
        arity = 2 if name in _QSUB_TWO_VALUES else 1 if name in _QSUB_WITH_VALUE else 0
        if not arity or len(words) < arity:
            return None
        value = " ".join(words[:arity])
        del words[:arity]
        if name == "l":
            options.extend(_resource_options("soft.l" if soft else "l", value))
        else:
            options.append((name, value))
    return options


def _qsub_directives(script: bytes) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in io.BytesIO(script):
        if line.startswith(_QSUB_PREFIX):
            # qsub ends a directive at its first '#', quoted or not.
            text = (line[len(_QSUB_PREFIX):].rstrip(b"\r\n").partition(b"#")[0]
                    .decode("utf-8", "replace"))
            words = _split_words(text, open_quote_ends_line=True) or []
            directives.update(_qsub_line(words) or ())
    return directives


def parse_directives(script: bytes, scheduler: str) -> dict[str, str]:
    """The directives of a script for `scheduler` (a Scheduler, or its value)."""
    if scheduler == GRIDENGINE:
        return _qsub_directives(script)
    dialect = _DIALECTS[scheduler]
    directives: dict[str, str] = {}
    for number, line in enumerate(io.BytesIO(script)):  # lazily: the header is usually short
        if number == 0 and line.startswith(b"#!"):
            continue
        if line.startswith(dialect.prefix):
            rest = line[len(dialect.prefix):]
            if not rest or rest[:1].isspace():
                words = _split_words(rest.decode("utf-8", "replace"))
                options = _line_options(words, dialect) if words is not None else None
                directives.update(options or ())
                continue
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            break  # the first command ends the header
    return directives


@dataclass(frozen=True)
class JobMetadata:
    job_name: str | None = None
    account: str | None = None
    partition: str | None = None
    work_dir: str | None = None
    time_limit: str | None = None
    nodes: str | None = None
    ntasks: str | None = None


_PPN = re.compile(r"(?:^|:)ppn=(\d+)")


def ppn_from_nodes(nodes: str | None) -> str | None:
    """The processes per node of a PBS node spec such as "2:ppn=4", where given."""
    match = _PPN.search(nodes) if nodes else None
    return match.group(1) if match else None


def metadata_from_directives(directives: Mapping[str, str], scheduler: str) -> JobMetadata:
    """The event's metadata fields as the directives give them (empty values count as unset)."""

    def get(key: str) -> str | None:
        return directives.get(key) or None

    if scheduler == GRIDENGINE:
        # -cwd means the submit directory, which the script does not know; -pe's second word
        # is the slot count (or range).
        pe_slots = (get("pe") or "").partition(" ")[2] or None
        return JobMetadata(
            job_name=get("N"), account=get("A"), partition=get("q"), work_dir=get("wd"),
            time_limit=get("l.h_rt"), nodes=None, ntasks=pe_slots,
        )
    if scheduler == Scheduler.SLURM:
        return JobMetadata(
            job_name=get("job-name"), account=get("account"), partition=get("partition"),
            work_dir=get("chdir"), time_limit=get("time"), nodes=get("nodes"),
            ntasks=get("ntasks"),
        )
    return JobMetadata(
        job_name=get("name"), account=get("account"), partition=get("queue"),
        work_dir=get("workdir"), time_limit=get("l.walltime"), nodes=get("l.nodes"),
        ntasks=ppn_from_nodes(get("l.nodes")),
    )
