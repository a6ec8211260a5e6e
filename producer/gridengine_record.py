"""A Grid Engine job record, decoded (pure): what qmaster (Son of Grid Engine 8.1.9, classic
spooling) writes to `jobs/<2>/<4>/<4>` (an array job's to `.../common`).

The record is one packed CULL element of type JB_Type (producer/cull.py reads the format).
qmaster writes a job it has just accepted as a free element, with its descriptor; when it
rewrites the job later (a state change) the element is bound to qmaster's job list and the
descriptor is left out, so such a record is read with 8.1.9's descriptor of JB_Type, kept
below. Lists always carry their own descriptors. Either way every field used here is looked
up by its number and checked for its type, and the whole buffer must be consumed exactly: a
build whose job type differs is refused with GridEngineRecordError, never misread.

Field numbers are SGE's (JB_LOWERBOUND 50 and the JB_Type enumeration of sge_job_JB_L.h;
the sub-types' numbers as their lists' descriptors carry them). Strings other than the
environment's are decoded as UTF-8, undecodable bytes replaced; the environment stays bytes,
and the job says where each of its names and values lies in the record (from the same parse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from producer.cull import (
    BOOL_T,
    DOUBLE_T,
    HOST_T,
    LIST_T,
    OBJECT_T,
    REF_T,
    STRING_T,
    TYPE_NAMES,
    ULONG_T,
    CullElement,
    CullFormatError,
    CullList,
    CullValue,
    Field,
    Span,
    unpack_element,
)
from producer.errors import REASON_MALFORMED, SpoolReadError

JB_LOWERBOUND = 50

# JB_Type of SGE 8.1.9, field by field from JB_job_number (50) on: the types only (their flags
# do not change how a record is packed, every field is).
_JB_TYPES_8_1_9: tuple[int, ...] = (
    ULONG_T, STRING_T, ULONG_T,  # job_number, job_name, version
    LIST_T, LIST_T, LIST_T, LIST_T, LIST_T, LIST_T,  # jid_* and ja_ad_* dependencies
    STRING_T, STRING_T, STRING_T,  # session, project, department
    STRING_T, STRING_T, STRING_T, ULONG_T, STRING_T,  # directive_prefix .. script_ptr
    ULONG_T, ULONG_T, ULONG_T,  # submission_time, execution_time, deadline
    STRING_T, ULONG_T, STRING_T, ULONG_T, STRING_T,  # owner, uid, group, gid, account
    STRING_T, BOOL_T, ULONG_T, BOOL_T, ULONG_T, ULONG_T,  # cwd, notify, type, reserve, ...
    LIST_T, ULONG_T, LIST_T, LIST_T, LIST_T,  # shell_list, verify, env_list, context, args
    ULONG_T, STRING_T, OBJECT_T, ULONG_T, ULONG_T,  # checkpoint_*, restart
    LIST_T, LIST_T, LIST_T, BOOL_T,  # stdout/stderr/stdin paths, merge_stderr
    LIST_T, LIST_T, LIST_T, LIST_T,  # hard/soft resources, hard/soft queues
    ULONG_T, LIST_T,  # mail_options, mail_list
    STRING_T, LIST_T, LIST_T,  # pe, pe_range, master_hard_queue_list
    STRING_T, STRING_T,  # tgt, cred
    *(LIST_T,) * 9,  # ja_structure, ja_*_ids, ja_template, ja_tasks
    HOST_T, REF_T,  # host, category
    LIST_T, LIST_T, ULONG_T, ULONG_T, ULONG_T, ULONG_T, LIST_T, LIST_T,  # user_list .. aliases
    *(DOUBLE_T,) * 6,  # urg, nurg, nppri, rrcontr, dlcontr, wtcontr
    ULONG_T, ULONG_T, ULONG_T, LIST_T,  # ar, pty, ja_task_concurrency, binding
)
JB_DESCRIPTOR_8_1_9: tuple[Field, ...] = tuple(
    Field(JB_LOWERBOUND + index, kind) for index, kind in enumerate(_JB_TYPES_8_1_9)
)

JB_JOB_NUMBER = 50
JB_JOB_NAME = 51
JB_PROJECT = 60
JB_EXEC_FILE = 63
JB_SCRIPT_FILE = 64
JB_SUBMISSION_TIME = 67
JB_OWNER = 70
JB_UID = 71
JB_GROUP = 72
JB_GID = 73
JB_ACCOUNT = 74
JB_CWD = 75
JB_TYPE = 77
JB_SHELL_LIST = 81
JB_ENV_LIST = 83
JB_JOB_ARGS = 85
JB_HARD_RESOURCE_LIST = 95
JB_HARD_QUEUE_LIST = 97
JB_PE = 101
JB_PE_RANGE = 102
JB_JA_STRUCTURE = 106

# Sub-types: the fields used of the elements of those lists.
PN_PATH = 1300  # JB_shell_list
RN_MIN, RN_MAX, RN_STEP = 1250, 1251, 1252  # JB_ja_structure, JB_pe_range
VA_VARIABLE, VA_VALUE = 1400, 1401  # JB_env_list
CE_NAME, CE_STRINGVAL = 900, 903  # JB_hard_resource_list
QR_NAME = 1900  # JB_hard_queue_list
ST_NAME = 2000  # JB_job_args

# JB_type bits (sge_job.h).
JOB_TYPE_BINARY = 0x40
JOB_TYPE_ARRAY = 0x80


class GridEngineRecordError(SpoolReadError):
    """A job record that is not one SGE 8.1.9's qmaster wrote (damaged, truncated, another
    build's or not a job's): a per-job error, counted, never a crash."""

    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(job_id, REASON_MALFORMED, f"Grid Engine job record: {detail}")


@dataclass(frozen=True)
class TaskRange:
    """A range of ids as Grid Engine writes it: first, last and step (RN_Type)."""

    start: int
    end: int
    step: int

    def __str__(self) -> str:
        """As qsub's -t and qstat write it: "1-10:2"."""
        return f"{self.start}-{self.end}:{self.step}"


@dataclass(frozen=True)
class GridEngineJob:
    """What a job record says of the job, as qsub's options set it."""

    job_id: int
    job_name: str  # -N, else the script's file name ("STDIN" when read from stdin)
    owner: str
    owner_uid: int
    group: str
    group_gid: int
    account: str | None  # -A (qsub's default is "sge")
    project: str | None  # -P
    hard_queues: tuple[str, ...]  # -q
    work_dir: str | None  # -cwd (the submit directory) or -wd; None: the owner's home
    array: TaskRange | None  # -t; None for a job that is no array
    hard_resources: Mapping[str, str]  # -l name -> value as qmaster normalised it (h_rt in s)
    parallel_environment: str | None  # -pe name
    pe_slots: TaskRange | None  # -pe slot range
    environment: tuple[tuple[bytes, bytes], ...]  # (name, value) in record order; no value: b""
    script_file: str | None  # the submitted script's path, "STDIN", or a binary job's command
    exec_file: str | None  # qmaster's copy, relative to its spool: "job_scripts/<id>"
    binary: bool  # -b y: no script file; script_file and job_args are the command
    job_args: tuple[bytes, ...]  # arguments after the script (or the binary)
    submit_time_ms: int  # epoch milliseconds (qmaster records whole seconds)
    shell: str | None  # -S
    # Where each environment entry's name and value lie in the record's bytes, in record order
    # (producer.gridengine_spool masks entries in place there): a position, not the job's value.
    environment_spans: tuple[tuple[Span, Span], ...] = dataclasses.field(compare=False)

    @property
    def command(self) -> tuple[bytes, ...]:
        """A binary job's command line (its executable and arguments); () for a script."""
        if not self.binary or self.script_file is None:
            return ()
        return (self.script_file.encode(), *self.job_args)


def parse_job_record(data: bytes, *, job_id: str = "?") -> GridEngineJob:
    """Decode a job record's bytes; job_id names the job in errors only.

    Raises GridEngineRecordError for anything but a whole, well-formed SGE 8.1.9 job record.
    """
    try:
        job = unpack_element(data, JB_DESCRIPTOR_8_1_9)
    except CullFormatError as error:
        raise GridEngineRecordError(job_id, str(error)) from error
    record = _Record(job, job_id)
    if not job.descriptor or job.descriptor[0].name != JB_JOB_NUMBER:
        raise GridEngineRecordError(job_id, "not a job (its first field is not JB_job_number)")
    job_type = record.ulong(JB_TYPE)
    array = record.ranges(JB_JA_STRUCTURE)
    if job_type & JOB_TYPE_ARRAY and not array:
        raise GridEngineRecordError(job_id, "an array job without its task range")
    return GridEngineJob(
        job_id=record.ulong(JB_JOB_NUMBER),
        job_name=record.text(JB_JOB_NAME) or "",
        owner=record.text(JB_OWNER) or "",
        owner_uid=record.ulong(JB_UID),
        group=record.text(JB_GROUP) or "",
        group_gid=record.ulong(JB_GID),
        account=record.text(JB_ACCOUNT),
        project=record.text(JB_PROJECT),
        hard_queues=tuple(_decode(v) for v in record.column(JB_HARD_QUEUE_LIST, QR_NAME)),
        work_dir=record.text(JB_CWD),
        array=array[0] if job_type & JOB_TYPE_ARRAY else None,
        hard_resources=MappingProxyType(record.resources()),
        parallel_environment=record.text(JB_PE),
        pe_slots=next(iter(record.ranges(JB_PE_RANGE)), None),
        environment=record.environment(),
        environment_spans=record.environment_spans(),
        script_file=record.text(JB_SCRIPT_FILE),
        exec_file=record.text(JB_EXEC_FILE),
        binary=bool(job_type & JOB_TYPE_BINARY),
        job_args=tuple(record.column(JB_JOB_ARGS, ST_NAME)),
        submit_time_ms=record.ulong(JB_SUBMISSION_TIME) * 1000,
        shell=next((_decode(v) for v in record.column(JB_SHELL_LIST, PN_PATH)), None),
    )


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class _Record:
    """Typed access to the decoded job: a field of another type than expected is an error."""

    def __init__(self, job: CullElement, job_id: str) -> None:
        self.job = job
        self.job_id = job_id

    def _value(self, element: CullElement, name: int, kinds: tuple[int, ...]) -> CullValue:
        field = element.field(name)
        if field is None:
            raise GridEngineRecordError(self.job_id, f"no field {name} in its descriptor")
        if field.type not in kinds:
            raise GridEngineRecordError(
                self.job_id, f"field {name} is a {TYPE_NAMES.get(field.type, field.type)}, "
                f"expected a {' or '.join(TYPE_NAMES[k] for k in kinds)}")
        return element.values.get(name)

    def ulong(self, name: int, element: CullElement | None = None) -> int:
        value = self._value(element or self.job, name, (ULONG_T,))
        if not isinstance(value, int):  # the reader gives an int for every ulong field
            raise GridEngineRecordError(self.job_id, f"field {name} holds no integer")
        return value

    def raw(self, name: int, element: CullElement | None = None) -> bytes | None:
        value = self._value(element or self.job, name, (STRING_T, HOST_T))
        if value is not None and not isinstance(value, bytes):  # the reader's contract
            raise GridEngineRecordError(self.job_id, f"field {name} holds no string")
        return value

    def text(self, name: int) -> str | None:
        raw = self.raw(name)
        return None if raw is None else _decode(raw)

    def elements(self, name: int) -> tuple[CullElement, ...]:
        value = self._value(self.job, name, (LIST_T,))
        return value.elements if isinstance(value, CullList) else ()

    def column(self, name: int, sub_field: int) -> list[bytes]:
        """One string field of every element of a list, NULLs left out."""
        values = (self.raw(sub_field, element) for element in self.elements(name))
        return [value for value in values if value is not None]

    def ranges(self, name: int) -> list[TaskRange]:
        return [
            TaskRange(self.ulong(RN_MIN, e), self.ulong(RN_MAX, e), self.ulong(RN_STEP, e))
            for e in self.elements(name)
        ]

    def environment(self) -> tuple[tuple[bytes, bytes], ...]:
        return tuple(
            (self.raw(VA_VARIABLE, e) or b"", self.raw(VA_VALUE, e) or b"")
            for e in self.elements(JB_ENV_LIST)
        )

    def environment_spans(self) -> tuple[tuple[Span, Span], ...]:
        return tuple((self.span(VA_VARIABLE, e), self.span(VA_VALUE, e))
                     for e in self.elements(JB_ENV_LIST))

    def span(self, name: int, element: CullElement) -> Span:
        self.raw(name, element)  # a string field, or an error
        return element.spans[name]

    def resources(self) -> dict[str, str]:
        resources: dict[str, str] = {}
        for element in self.elements(JB_HARD_RESOURCE_LIST):
            name = self.raw(CE_NAME, element)
            if name is not None:
                resources[_decode(name)] = _decode(self.raw(CE_STRINGVAL, element) or b"")
        return resources
