"""What the CLI prints, as pure functions of records and metadata: show's text, the search
table, --format lines, environment listings, the list of jobs that match one id."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

from query.record import METADATA_KEYS, JobRecord, Metadata
from query.terminal import safe_bytes, safe_line

# Fields --format may name besides the metadata: the submit time as text.
FORMAT_EXTRAS = ("submitted",)
_ELLIPSIS = "\u2026"


class FormatError(ValueError):
    """A --format template names an unknown field or uses more than plain {field}: usage."""


def submitted_text(metadata: Metadata, zone: tzinfo) -> str:
    moment = datetime.fromtimestamp(int(metadata["submit_time"]) / 1000, tz=zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _text(value: Any) -> str:
    return "" if value is None else safe_line(str(value))


def owner_text(meta: Mapping[str, Any]) -> str:
    """The owner as the scheduler knows it, with its uid and source; `unknown` before schema
    version 2 or where it could not be established."""
    source = meta.get("owner_source") or "UNKNOWN"
    if source == "UNKNOWN":
        return "unknown (administrators only)"
    uid = meta.get("owner_uid")
    name = meta.get("owner") or "?"
    return f"{name}{'' if uid is None else f' (uid {uid})'} from {source}"


def show_text(record: JobRecord, zone: tzinfo) -> str:
    """show's default output: the metadata, then the script rendered for a terminal."""
    meta = record.metadata
    rows: list[tuple[str, Any]] = [
        ("job", f"{meta['job_id']} on {meta['cluster']} ({meta['scheduler']})"),
        ("key", meta["job_key"]),
        ("submitted", submitted_text(meta, zone)),
        ("owner", owner_text(meta)),
        ("user", f"{meta.get('user')} (claimed by {meta.get('user_source')})"),
        ("name", meta.get("job_name")),
        ("account", meta.get("account")),
        ("partition", meta.get("partition")),
        ("work dir", meta.get("work_dir")),
        ("time limit", meta.get("time_limit")),
        ("nodes", meta.get("nodes")),
        ("tasks", meta.get("ntasks")),
        ("array", None if meta.get("array_job_id") is None
         else f"{meta['array_job_id']} tasks {meta.get('array_task_id')}"),
        ("modules", " ".join(record.modules) or None),
        ("script", f"{meta['script_size']} bytes, sha256 {meta['script_sha256']}"
         + (", truncated" if meta.get("script_truncated") else "")),
        ("environment", f"{len(record.environment)} variables"),
        ("redacted", " ".join(meta.get("redacted_keys") or ()) or None),
        ("read by", f"{meta.get('producer_host')} (sarchive {meta.get('producer_version')})"),
        ("archived at", record.location),
    ]
    lines = [f"{label + ':':<13}{_text(value)}" for label, value in rows if value is not None]
    directives = meta.get("directives") or {}
    if directives:
        lines.append("directives:")
        lines.extend(f"  {_text(k)} = {_text(v)}" for k, v in sorted(directives.items()))
    lines.append("")
    lines.append("----- script -----")
    script = safe_bytes(record.script)
    lines.append(script[:-1] if script.endswith("\n") else script)
    return "\n".join(lines) + "\n"


def environment_lines(environment: Iterable[tuple[str, str]]) -> str:
    """One KEY=VALUE per line, newlines and controls in values escaped visibly (\\n, \\e)."""
    return "".join(f"{safe_line(key)}={safe_line(value)}\n" for key, value in environment)


TABLE_COLUMNS = (("SUBMITTED", "submitted"), ("CLUSTER", "cluster"), ("JOB", "job_id"),
                 ("USER", "user"), ("ACCOUNT", "account"), ("PARTITION", "partition"),
                 ("NAME", "job_name"))
CHOICE_COLUMNS = (("CLUSTER", "cluster"), ("SUBMITTED", "submitted"), ("USER", "user"),
                  ("NAME", "job_name"), ("KEY", "job_key"))


def _cell(meta: Metadata, field: str, zone: tzinfo) -> str:
    return submitted_text(meta, zone) if field == "submitted" else _text(meta.get(field))


def table(rows: Sequence[Metadata], zone: tzinfo, width: int,
          columns: Sequence[tuple[str, str]] = TABLE_COLUMNS) -> str:
    """Columns as wide as their widest cell; the last column is cut to fit width."""
    cells = [[_cell(meta, field, zone) for _, field in columns] for meta in rows]
    headers = [title for title, _ in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *cells]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        if len(line) > width:
            line = line[:max(width - 1, 0)] + _ELLIPSIS
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_format(template: str) -> str:
    """template, if it names only plain fields ({user}, {job_id}, ...), no attributes,
    indexes, conversions or format specs: --format is a column picker, not code."""
    known = set(METADATA_KEYS) | set(FORMAT_EXTRAS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FormatError(f"--format {template!r}: {exc}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in known or spec or conversion:
            raise FormatError(f"--format {template!r}: {{{field}}} is not a plain field;"
                              f" fields: {', '.join(sorted(known))}")
    return template


def format_line(template: str, meta: Metadata, zone: tzinfo) -> str:
    values = {key: _text(meta.get(key)) for key in METADATA_KEYS}
    values["submitted"] = submitted_text(meta, zone)
    return template.format_map(values) + "\n"


def json_line(value: Any) -> str:
    """One JSON value on one line, ASCII only: no character of a job reaches a terminal raw."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")) + "\n"


def module_table(counts: Sequence[tuple[str, int]]) -> str:
    width = max([len("JOBS")] + [len(str(n)) for _, n in counts])
    lines = [f"{'JOBS':>{width}}  MODULE"]
    lines.extend(f"{n:>{width}}  {safe_line(name)}" for name, n in counts)
    return "\n".join(lines) + "\n"


def sorted_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Most used first, then by name."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
