"""Where each file of a job event goes in the archive: pure functions of the event.

Part of the contract: the archive consumer writes by this layout and readers of the archive
(a `sarchive` CLI) find files by it, so both import this one definition, which needs nothing
but the event model and the standard library.

A layout is a template of the path below the archive root with named fields, for example
`{period}/{name}` (sarchive's) or `{user}/{year}/{month}/{job_id}-{job_name}.{ext}`. Every
value taken from a message is checked before it becomes part of a path: identifiers (cluster,
user, job id, spool file names) that could leave their directory are refused with
UnsafeNameError, which sends the event to the dead-letter topic; the free-text job name is
made safe instead (see safe_job_name), so that no job is refused for its name alone.

Dates come from the event's submit time, never from the consumer's clock, converted to the
layout's time zone, an explicit input (the archive consumer's --time-zone; a reader computes
the same paths only with the same zone): every delivery of a job lands in the same place.
"""

from __future__ import annotations

import enum
import functools
import glob
import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo

from schemas.model import JobEvent, Scheduler

PRESETS: Mapping[str, str] = {
    "sarchive": "{period}/{name}",
    "per-user": "{user}/{year}/{month}/{job_id}-{job_name}.{ext}",
    "xdmod": "{year}{month}{day}/{job_id}.savescript",
    "sharded": "{cluster}/{job_id_shard}/{name}",
}
DEFAULT_PRESET = "sarchive"

# Fields with one value per event, and fields with one value per file of the event.
EVENT_FIELDS = frozenset({"cluster", "user", "job_name", "job_id", "year", "month", "day",
                          "period", "job_id_shard"})
FILE_FIELDS = frozenset({"name", "ext"})

TEMP_PREFIX = ".sarchive-tmp-"
NAME_MAX = 255
PATH_MAX = 4096
# A file of a job that collides with another job's is stored beside it as "<name>.<tag>":
# names are kept short enough for that suffix to fit as well.
TAG_LENGTH = 12
MAX_COMPONENT_BYTES = NAME_MAX - 1 - TAG_LENGTH
MAX_JOB_NAME_BYTES = 100
# What no path component may contain: the separator, and control characters (NUL among them).
_UNSAFE_CHARACTER = re.compile(r"[/\x00-\x1f\x7f]")

UNKNOWN_USER = "_unknown"
UNNAMED_JOB = "_unnamed"

REASON_UNSAFE = "unsafe-path"
REASON_TOO_LONG = "name-too-long"
REASON_BAD_TIME = "invalid-submit-time"
REASON_DUPLICATE_PATH = "path-conflict"


class Period(enum.StrEnum):
    YEARLY = "yearly"
    MONTHLY = "monthly"
    DAILY = "daily"
    NONE = "none"


_PERIOD_FORMATS = {Period.YEARLY: "%Y", Period.MONTHLY: "%Y%m", Period.DAILY: "%Y%m%d",
                   Period.NONE: ""}


class Role(enum.StrEnum):
    SCRIPT = "script"
    ENVIRONMENT = "environment"
    SPOOL = "spool"  # any other spool file (Torque .JB, .TA, Grid Engine's record, ...)
    METADATA = "metadata"


class UnsafeNameError(ValueError):
    """A value from the event cannot safely become part of a path; reason is the DLQ token."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, order=True)
class ArchivePath:
    """A path below the archive root: directory components and a file name, all checked."""

    directory: tuple[str, ...]
    name: str

    def __str__(self) -> str:
        return "/".join((*self.directory, self.name))

    def beside(self, tag: str) -> ArchivePath:
        return ArchivePath(self.directory, f"{self.name}.{tag}")


@dataclass(frozen=True)
class PlacedFile:
    role: Role
    spool_name: str
    path: ArchivePath
    content: bytes

    @functools.cached_property
    def sha256(self) -> bytes:
        """The content's SHA-256, computed once: the slot tag and the sidecar both need it."""
        return hashlib.sha256(self.content).digest()


@dataclass(frozen=True)
class Placement:
    """Where one event's files go: its data files, and the metadata sidecar's path."""

    files: tuple[PlacedFile, ...]
    metadata: ArchivePath


@dataclass(frozen=True)
class SourceFile:
    """One file an event contributes to the archive, before placement."""

    role: Role
    spool_name: str
    content: bytes


def check_component(value: str, what: str) -> str:
    """value, if it can be one path component on its own; UnsafeNameError otherwise."""
    if not value:
        raise UnsafeNameError(REASON_UNSAFE, f"{what} is empty")
    if value in (".", ".."):
        raise UnsafeNameError(REASON_UNSAFE, f"{what} {value!r} is a relative directory")
    bad = _UNSAFE_CHARACTER.search(value)
    if bad is not None:
        raise UnsafeNameError(REASON_UNSAFE, f"{what} {value[:80]!r} contains {bad.group()!r}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        raise UnsafeNameError(
            REASON_TOO_LONG, f"{what} is longer than {MAX_COMPONENT_BYTES} bytes: {value[:80]!r}")
    return value


def safe_job_name(job_name: str | None) -> str:
    """The job name made usable in a file name: separators and control characters become
    '_', and it is cut to MAX_JOB_NAME_BYTES of UTF-8. Job names are free text chosen by
    users, so they are made safe rather than refused."""
    if not job_name:
        return UNNAMED_JOB
    cleaned = _UNSAFE_CHARACTER.sub("_", job_name)
    encoded = cleaned.encode("utf-8", "surrogatepass")[:MAX_JOB_NAME_BYTES]
    cleaned = encoded.decode("utf-8", "ignore")  # drops a character cut in half
    return "_" if cleaned in (".", "..") else cleaned


def job_id_shard(job_id: str) -> str:
    """Two directory levels from the job id's number read backwards: 12345678 -> '87/65',
    4711 -> '11/74'. The last digits change fastest, so jobs spread evenly over 10,000
    directories; an id that does not start with a digit goes to '_/_'."""
    digits = ""
    for char in job_id:
        if not char.isascii() or not char.isdigit():
            break
        digits += char
    if not digits:
        return "_/_"
    backwards = digits.zfill(4)[::-1]
    return f"{backwards[0:2]}/{backwards[2:4]}"


def source_files(event: JobEvent) -> tuple[SourceFile, ...]:
    """The files an event contributes: the script first, then the other spool files.

    Slurm: the script is the event's script (as submitted, without the NUL Slurm appends in
    its spool copy); the environment is the spool `environment` file exactly as the
    producer carried it (Slurm's own format, redactions applied), as sarchive copies it.
    Torque: every spool file as carried, under its original name; the `.SC` file is the
    script (the event's script stands in if the spool copy is missing).
    Grid Engine: the script is the event's script (job_scripts/<id> as submitted; a binary
    job's command line, which the spool keeps in the record only); the environment is the
    event's (its canonical form: the spool keeps it inside the record); then the record as
    carried (redactions applied).
    """
    if event.scheduler is Scheduler.GRIDENGINE:
        files = [SourceFile(Role.SCRIPT, "script", event.script)]
        if event.environment:
            files.append(SourceFile(Role.ENVIRONMENT, "environment", event.environment))
        files += [SourceFile(Role.SPOOL, spool.name, spool.content)
                  for spool in event.spool_files if spool.name != "script"]
        return tuple(files)
    if event.scheduler is Scheduler.SLURM:
        files = [SourceFile(Role.SCRIPT, "script", event.script)]
        for spool in event.spool_files:
            if spool.name == "script":
                continue
            role = Role.ENVIRONMENT if spool.name == "environment" else Role.SPOOL
            files.append(SourceFile(role, spool.name, spool.content))
        return tuple(files)
    scripts = [SourceFile(Role.SCRIPT, s.name, s.content)
               for s in event.spool_files if s.name.endswith(".SC")]
    if not scripts:
        scripts = [SourceFile(Role.SCRIPT, f"{event.job_id}.SC", event.script)]
    others = [SourceFile(Role.SPOOL, s.name, s.content)
              for s in event.spool_files if not s.name.endswith(".SC")]
    return (scripts[0], *scripts[1:], *others)


def _file_fields(event: JobEvent, file: SourceFile | None) -> dict[str, str]:
    """{name} and {ext} of one file; file None means the metadata sidecar."""
    if file is None:
        return {"name": f"job.{event.job_id}_metadata.json", "ext": "json"}
    if event.scheduler in (Scheduler.SLURM, Scheduler.GRIDENGINE):
        name = f"job.{event.job_id}_{file.spool_name}"
    else:
        name = file.spool_name
    ext = {Role.SCRIPT: "sh", Role.ENVIRONMENT: "env"}.get(file.role, file.spool_name)
    return {"name": name, "ext": ext}


class Layout:
    """A compiled layout template; place() maps an event to the paths of its files.

    zone: the time zone of the date fields ({year} {month} {day} {period}): a job's date is
    its submit instant converted to this zone, so 2024-03-15 23:30 UTC is 20240316 in
    Europe/Brussels. Nothing here reads the host's zone: the caller decides.
    """

    def __init__(self, template: str, period: Period, zone: tzinfo) -> None:
        self.template = template
        self.period = period
        self.zone = zone
        self.fields = _template_fields(template)
        # Without {name} or {ext} every file of a job would get the same path: such a
        # layout (xdmod's) archives the script only, with the sidecar at "<path>.json".
        self.per_file = bool(self.fields & FILE_FIELDS)
        _check_template(self)

    @classmethod
    def from_setting(cls, layout: str, period: Period, zone: tzinfo) -> Layout:
        """layout is a preset name or a template."""
        return cls(PRESETS.get(layout, layout), period, zone)

    def place(self, event: JobEvent) -> Placement:
        values = self._event_values(event)
        sources = source_files(event)
        if not self.per_file:
            sources = sources[:1]
        placed = tuple(PlacedFile(f.role, f.spool_name,
                                  self._path({**values, **_file_fields(event, f)}), f.content)
                       for f in sources)
        if self.per_file:
            metadata = self._path({**values, **_file_fields(event, None)})
        else:
            metadata = ArchivePath(placed[0].path.directory, placed[0].path.name + ".json")
            _check_final(metadata)
        paths = [f.path for f in placed] + [metadata]
        if len(set(paths)) != len(paths):
            raise UnsafeNameError(REASON_DUPLICATE_PATH,
                                  f"layout {self.template!r} gives two files of job"
                                  f" {event.job_id} the same path: {sorted(map(str, paths))}")
        return Placement(placed, metadata)

    def _event_values(self, event: JobEvent) -> dict[str, str]:
        check_component(event.cluster, "cluster")
        check_component(event.job_id, "job id")
        if event.user is not None:
            check_component(event.user, "user")
        for spool in event.spool_files:
            check_component(spool.name, "spool file name")
        try:
            submitted = datetime.fromtimestamp(event.submit_time / 1000, tz=self.zone)
        except (OverflowError, OSError, ValueError) as exc:
            raise UnsafeNameError(REASON_BAD_TIME,
                                  f"submit time {event.submit_time} ms is not a date") from exc
        return {
            "cluster": event.cluster,
            "user": event.user if event.user is not None else UNKNOWN_USER,
            "job_name": safe_job_name(event.job_name),
            "job_id": event.job_id,
            "year": f"{submitted.year:04d}",
            "month": f"{submitted.month:02d}",
            "day": f"{submitted.day:02d}",
            "period": submitted.strftime(_PERIOD_FORMATS[self.period]),
            "job_id_shard": job_id_shard(event.job_id),
        }

    def _path(self, values: Mapping[str, str]) -> ArchivePath:
        rendered = self.template.format_map(values)
        # Empty components come from an empty {period}; they are dropped, not kept as "//".
        components = [c for c in rendered.split("/") if c]
        path = ArchivePath(tuple(components[:-1]), components[-1])
        _check_final(path)
        return path


def _check_final(path: ArchivePath) -> None:
    for component in (*path.directory, path.name):
        check_component(component, f"path component of {str(path)[:80]!r}")
        if component.startswith(TEMP_PREFIX):
            raise UnsafeNameError(REASON_UNSAFE,
                                  f"{component!r} would look like a temporary file")
    if len(str(path).encode("utf-8", "surrogatepass")) + NAME_MAX > PATH_MAX:
        raise UnsafeNameError(REASON_TOO_LONG, f"path {str(path)[:80]!r}... is too long")


def _template_fields(template: str) -> frozenset[str]:
    fields: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"layout {template!r}: {exc}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in EVENT_FIELDS | FILE_FIELDS:
            raise ValueError(f"layout {template!r}: unknown field {{{field}}}; known:"
                             f" {', '.join(sorted(EVENT_FIELDS | FILE_FIELDS))}")
        if spec or conversion:
            raise ValueError(f"layout {template!r}: {{{field}}} takes no format or conversion")
        fields.add(field)
    return frozenset(fields)


def _check_template(layout: Layout) -> None:
    """Refuse templates that could leave the archive or put two jobs on one path."""
    template = layout.template
    if not template or template.startswith("/") or template.endswith("/"):
        raise ValueError(f"layout {template!r} must be a relative path ending in a file name")
    if not layout.fields & {"job_id", "name"}:
        raise ValueError(f"layout {template!r} must contain {{job_id}} or {{name}}")
    # Field values are checked one by one at run time; what is left to check is the
    # template's own text, so render it with harmless values.
    sample = {field: "x" for field in EVENT_FIELDS | FILE_FIELDS}
    for period in ("", "2024"):
        for component in template.format_map({**sample, "period": period}).split("/"):
            if component in (".", "..") or "\0" in component:
                raise ValueError(f"layout {template!r} must not contain '.', '..' or NUL"
                                 " as a path component")


# -- Reading the archive: where a layout can have put a job's sidecar -----------------------

_ANY = "*"
_PERIOD_MARK = "\0period\0"


def period_directory(period: Period, when: datetime) -> str:
    """The {period} value of an instant, in the time zone `when` carries: readers compare
    directory names with it to skip periods outside a date range."""
    return when.strftime(_PERIOD_FORMATS[period])


@dataclass(frozen=True)
class SidecarPattern:
    """Glob patterns (one per path component, glob.escape'd values) that match the sidecars
    a layout can have written for the given values; period_level is the index of the
    component that is exactly {period} (comparable with period_directory), if any.
    A sidecar stored beside a colliding job's has the suffix ".<tag>" on its last component."""

    components: tuple[str, ...]
    period_level: int | None


def sidecar_pattern(layout: Layout, job_id: str | None = None,
                    cluster: str | None = None) -> SidecarPattern:
    """Where the sidecars of job_id (any job when None) on cluster (any when None) can be:
    every field the reader does not know (user, job name, dates) is a wildcard."""
    escaped_id = glob.escape(job_id) if job_id is not None else _ANY
    values = {field: _ANY for field in EVENT_FIELDS}
    values.update({
        "job_id": escaped_id,
        "cluster": glob.escape(cluster) if cluster is not None else _ANY,
        "job_id_shard": job_id_shard(job_id) if job_id is not None else f"{_ANY}/{_ANY}",
        "period": "" if layout.period is Period.NONE else _PERIOD_MARK,
        "name": f"job.{escaped_id}_metadata.json",
        "ext": "json",
    })
    rendered = layout.template.format_map(values)
    if not layout.per_file:
        rendered += ".json"
    components = [c for c in rendered.split("/") if c]
    period_level = components.index(_PERIOD_MARK) if _PERIOD_MARK in components else None
    cleaned = tuple(re.sub(r"\*+", _ANY, c.replace(_PERIOD_MARK, _ANY)) for c in components)
    return SidecarPattern(cleaned, period_level)
