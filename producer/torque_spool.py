"""Torque's spool: server_priv/jobs/ (or its hashed subdirectories 0-9).

Files of one job, named by the job's file prefix "<number>.<server>":
- `<prefix>.SC`: the script, exactly as submitted (no terminator);
- `<prefix>.JB`: the job record. Torque 6 writes it with libxml2 as `<?xml version="1.0"?>
  <job>` with fixed fields (jobid, fileprefix, queue, ...) and `<attributes>` holding one element
  per job attribute, named as qstat -f names them (Job_Name, Job_Owner, euser, queue,
  Account_Name, init_work_dir, job_array_request, Variable_List, and Resource_List with one
  child per resource). Older servers put a binary job structure before the XML, so the parser
  looks for the XML wherever it starts;
- job arrays: `<prefix>.TA` marks the array, and each task has its own job record, named
  `<number>-<index>.<server>.JB` by Torque (file prefix of task "<number>[<index>].<server>")
  or `<number>[<index>].<server>.JB`; both spellings are read. The array's own files may also
  be spelled `<number>[].<server>.*`.
Torque writes the .SC while it receives the job and the .JB when it commits it, so a job is
ready once it has a parseable .JB (or task .JB) and its .SC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from producer.errors import REASON_MALFORMED, REASON_NOT_A_JOB, JobIncompleteError, SpoolReadError
from producer.spool_io import RawJob, open_spool_dir, read_spool_file, spool_error
from schemas.model import REDACTED_MARKER, Scheduler, SpoolFile

TORQUE_SCRIPT = re.compile(r"^(?P<id>.+)\.SC$")
TORQUE_FILE = re.compile(
    r"^(?P<number>\d+)(?P<index>\[\d*\]|-\d+)?(?P<server>(?:\.[^/\x00]+?)?)"
    r"\.(?P<suffix>SC|JB|TA)$"
)
SCRIPT_SUFFIX = "SC"
RECORD_SUFFIX = "JB"
ARRAY_SUFFIX = "TA"

_XML_START = re.compile(rb"<\?xml|<job[\s>]")
_XML_END = b"</job>"
_VARIABLE_LIST = re.compile(rb"(<Variable_List\b[^>]*(?<!/)>)(.*?)(</Variable_List>)", re.DOTALL)
_SUBMIT_ARGS = re.compile(rb"(<submit_args\b[^>]*(?<!/)>)(.*?)(</submit_args>)", re.DOTALL)


@dataclass(frozen=True)
class TorqueJobInfo:
    """What the producer uses from a .JB job record (all as written there)."""

    job_id: str | None = None
    euser: str | None = None
    job_owner: str | None = None
    job_name: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    nodes: str | None = None
    work_dir: str | None = None
    array_request: str | None = None
    variables: tuple[bytes, ...] = ()  # Variable_List as KEY=VALUE entries


@dataclass(frozen=True)
class TorqueFileName:
    number: str
    index: str | None  # a task's index, "" for the array itself ("N[]"), None for a plain job
    bracketed: bool  # spelled "N[...]" rather than "N-<index>"
    server: str  # ".server.domain", possibly empty
    suffix: str

    @property
    def base(self) -> str:
        """The job's file prefix, in the spelling this name uses."""
        return f"{self.number}[]{self.server}" if self.bracketed else self.number + self.server

    def same_job(self, other: TorqueFileName) -> bool:
        return self.number == other.number and self.server == other.server


def parse_torque_file_name(file_name: str) -> TorqueFileName | None:
    match = TORQUE_FILE.match(file_name)
    if match is None:
        return None
    index = match["index"]
    bracketed = index is not None and index.startswith("[")
    if index is not None:
        index = index.strip("[]-")
    return TorqueFileName(match["number"], index, bracketed, match["server"], match["suffix"])


def torque_job_base(file_name: str) -> str | None:
    """The file prefix of the job a .SC/.JB/.TA file belongs to (None for any other file).

    An array and its tasks share one base, in the spelling of the name: "123[4].server.JB"
    and "123[].server.TA" give "123[].server"; Torque's own "123-4.server.JB" gives
    "123.server". So `<base>.SC` names the job's script, and one base is one job event.
    """
    name = parse_torque_file_name(file_name)
    return None if name is None else name.base


def torque_subdir(base: str) -> str:
    """The hashed subdirectory (last digit of the job number) with Torque's job subdirs on."""
    number = re.match(r"\d+", base)
    if number is None:
        raise ValueError(f"{base!r} is not a Torque job file prefix")
    return number.group(0)[-1]


def parse_variable_list(text: str) -> tuple[bytes, ...]:
    """Torque's Variable_List: comma-separated KEY=VALUE, a comma in a value escaped as '\\,'."""
    entries: list[str] = []
    current: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and text[position + 1:position + 2] == ",":
            current.append(",")
            position += 2
            continue
        if char == ",":
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
        position += 1
    entries.append("".join(current))
    return tuple(entry.encode("utf-8") for entry in entries if entry)


def render_variable_list(entries: Sequence[bytes]) -> str:
    return ",".join(
        entry.decode("utf-8", "replace").replace(",", "\\,") for entry in entries
    )


def _text(element: ElementTree.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _xml_document(data: bytes, job_id: str) -> bytes:
    if not data.strip(b"\0 \t\r\n"):
        raise JobIncompleteError(job_id, "job record is empty")
    start = _XML_START.search(data)
    if start is None:
        raise SpoolReadError(job_id, REASON_MALFORMED, "job record holds no XML <job> document")
    end = data.rfind(_XML_END)
    if end < start.start():
        raise JobIncompleteError(job_id, "job record has no closing </job> yet")
    document = data[start.start():end + len(_XML_END)]
    if b"<!DOCTYPE" in document or b"<!ENTITY" in document:
        # Torque never writes these; refusing them keeps entity expansion out of the parser.
        raise SpoolReadError(job_id, REASON_MALFORMED, "job record declares a DOCTYPE")
    return document


def parse_torque_jb(data: bytes, *, job_id: str = "?") -> TorqueJobInfo:
    """The fields the producer uses from a .JB job record.

    An empty or unterminated record is JobIncompleteError (Torque may still be writing it);
    anything else that is not a well-formed <job> document is SpoolReadError("malformed").
    """
    document = _xml_document(data, job_id)
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        raise SpoolReadError(job_id, REASON_MALFORMED, f"job record XML: {exc}") from exc
    if root.tag != "job":
        raise SpoolReadError(job_id, REASON_MALFORMED, f"job record root is <{root.tag}>")
    attributes = root.find("attributes")
    if attributes is None:
        attributes = ElementTree.Element("attributes")
    variable_list = attributes.find("Variable_List")
    raw_variables = variable_list.text if variable_list is not None else None
    variables = parse_variable_list(raw_variables or "")
    return TorqueJobInfo(
        job_id=_text(root.find("jobid")),
        euser=_text(attributes.find("euser")),
        job_owner=_text(attributes.find("Job_Owner")),
        job_name=_text(attributes.find("Job_Name")),
        queue=_text(attributes.find("queue")) or _text(root.find("queue")),
        account=_text(attributes.find("Account_Name")),
        walltime=_text(attributes.find("Resource_List/walltime")),
        nodes=_text(attributes.find("Resource_List/nodes")),
        work_dir=_text(attributes.find("init_work_dir")),
        array_request=_text(attributes.find("job_array_request")),
        variables=variables,
    )


def render_torque_jb(data: bytes, variables: Sequence[bytes], hidden_keys: Sequence[str]) -> bytes:
    """The job record as stored, with Variable_List replaced by `variables`.

    submit_args is replaced by the redaction marker when it names a hidden (excluded or
    redacted) key: `qsub -v KEY=value` copies the value there too.
    """
    content = escape(render_variable_list(variables)).encode("utf-8")
    rendered = _VARIABLE_LIST.sub(lambda m: m.group(1) + content + m.group(3), data)
    hidden = [re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(key.encode()) + rb"=")
              for key in hidden_keys]

    def submit_args(match: re.Match[bytes]) -> bytes:
        if any(pattern.search(match.group(2)) for pattern in hidden):
            return match.group(1) + escape(REDACTED_MARKER.decode()).encode() + match.group(3)
        return match.group(0)

    return _SUBMIT_ARGS.sub(submit_args, rendered)


def _task_index(file_name: str, base: TorqueFileName) -> int | None:
    name = parse_torque_file_name(file_name)
    if name is None or name.suffix != RECORD_SUFFIX or not name.same_job(base) or not name.index:
        return None
    return int(name.index)


def read_torque_job(jobs_dir: Path, base: str) -> RawJob:
    """Read one job's files from jobs_dir, the directory holding them (server_priv/jobs or
    its hashed subdirectory, see torque_subdir). `base` is torque_job_base() of any of them.

    Records (.JB) are read before the script: a parseable record means Torque committed the
    job, so its script was complete before.
    """
    parsed = parse_torque_file_name(f"{base}.{SCRIPT_SUFFIX}")
    if parsed is None or parsed.index:
        raise SpoolReadError(base, REASON_NOT_A_JOB, f"{base!r} is not a Torque job file prefix")
    plain_spelling = parsed.number + parsed.server
    array_spelling = f"{parsed.number}[]{parsed.server}"
    with open_spool_dir(jobs_dir, base) as dir_fd:
        try:
            present = set(os.listdir(dir_fd))
        except OSError as exc:
            raise spool_error(exc, base, f"directory {jobs_dir}") from exc

        def own(suffix: str) -> str | None:
            return next((name for name in (f"{plain_spelling}.{suffix}",
                                           f"{array_spelling}.{suffix}") if name in present),
                        None)

        tasks = sorted(
            (index, name) for name in present
            if (index := _task_index(name, parsed)) is not None
        )
        array_file = own(ARRAY_SUFFIX)
        is_array = parsed.bracketed or array_file is not None or bool(tasks)
        job_id = array_spelling if is_array else plain_spelling
        record = own(RECORD_SUFFIX)
        record_names = ([record] if record else []) + [name for _, name in tasks]
        if not record_names:
            raise JobIncompleteError(job_id, "no job record (.JB) yet")
        records = [SpoolFile(name, read_spool_file(dir_fd, name, job_id).content)
                   for name in record_names]
        for spool_file in records:
            parse_torque_jb(spool_file.content, job_id=job_id)
        array = ([SpoolFile(array_file, read_spool_file(dir_fd, array_file, job_id).content)]
                 if array_file else [])
        script_name = own(SCRIPT_SUFFIX) or f"{base}.{SCRIPT_SUFFIX}"  # absent: incomplete
        script = read_spool_file(dir_fd, script_name, job_id)
    return RawJob(
        scheduler=Scheduler.TORQUE,
        job_id=job_id,
        submit_time_ms=script.mtime_ms,
        files=(SpoolFile(script_name, script.content), *records[:1], *array, *records[1:]),
    )
