"""Building a JobEvent from what was read from the spool: a pure function of bytes and values.

What the event keeps of the script (schema field `script`):
- Slurm stores the script followed by one NUL; exactly that one trailing NUL is dropped. Every
  other byte (CR, non-UTF-8, trailing newlines) is kept. Torque's .SC and Grid Engine's
  job_scripts/<id> are kept as stored. A Grid Engine binary job (`qsub -b y`) has no script:
  its command line, as the record holds it, stands in for one.
- script_size and script_sha256 describe that whole script; when it is longer than
  max_script_bytes only its first max_script_bytes bytes are carried (script_truncated).
- The script copy in spool_files is the stored file with the same cut: the carried script plus
  Slurm's NUL terminator when the stored file had one.
The environment leaves only after the policy: canonical `environment`, and the environment
inside spool_files (Slurm's environment file, Torque's Variable_List and submit_args, Grid
Engine's record) rebuilt from the filtered entries, so no excluded or redacted value is carried
anywhere. A Grid Engine record whose masking cannot be verified is left out of the event, and
build_job_event says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from producer.directives import (
    JobMetadata,
    metadata_from_directives,
    parse_directives,
    ppn_from_nodes,
)
from producer.environment import (
    EnvPolicy,
    FilteredEnvironment,
    apply_policy,
    canonical_environment,
    environment_index,
    environment_value,
    render_slurm_environment_file,
    user_from_environment,
)
from producer.errors import REASON_MALFORMED, SpoolReadError
from producer.gridengine_record import GridEngineJob, parse_job_record
from producer.gridengine_spool import (
    RECORD_SPOOL_FILE,
    SCRIPT_SPOOL_FILE,
    RecordWithheld,
    command_line,
    environment_entries,
    render_record,
    task_range,
)
from producer.slurm_owners import UNKNOWN_OWNER, JobOwner
from producer.slurm_spool import (
    ENVIRONMENT_FILE,
    SCRIPT_FILE,
    parse_environment_file,
    script_complete,
)
from producer.spool_io import RawJob
from producer.torque_spool import (
    RECORD_SUFFIX,
    SCRIPT_SUFFIX,
    parse_torque_file_name,
    parse_torque_jb,
    render_torque_jb,
)
from schemas.model import JobEvent, OwnerSource, Scheduler, SpoolFile, UserSource, make_job_key


@dataclass(frozen=True)
class EventSettings:
    cluster: str
    env_policy: EnvPolicy
    max_script_bytes: int
    host: str
    version: str

    def __post_init__(self) -> None:
        if self.max_script_bytes < 1:
            raise ValueError(f"max_script_bytes must be positive, not {self.max_script_bytes}")


@dataclass(frozen=True)
class _JobContent:
    """The scheduler-specific part of an event."""

    script: bytes  # the whole script as submitted
    carried_script: bytes  # what the event carries of it
    environment: FilteredEnvironment
    spool_files: tuple[SpoolFile, ...]
    directives: dict[str, str]
    metadata: JobMetadata
    user: str | None
    user_source: UserSource
    owner: JobOwner
    array_job_id: str | None
    array_task_id: str | None
    record_withheld: str | None = None  # why Grid Engine's record is not in spool_files


@dataclass(frozen=True)
class BuiltEvent:
    """A job's event, and what the producer reports of its building beyond the event."""

    event: JobEvent
    record_withheld: str | None  # why the job's Grid Engine record was left out; None: it was not


def _first(*values: str | None) -> str | None:
    return next((value for value in values if value), None)


def _slurm_content(raw: RawJob, settings: EventSettings, owner: JobOwner) -> _JobContent:
    script_file = raw.file(SCRIPT_FILE)
    if script_file is None:
        raise SpoolReadError(raw.job_id, REASON_MALFORMED, "no script file")
    stored = script_file.content
    script = stored[:-1] if script_complete(stored) else stored
    carried = script[:settings.max_script_bytes]
    entries = raw.environment_entries
    if entries is None:
        environment_file = raw.file(ENVIRONMENT_FILE)
        entries = (parse_environment_file(environment_file.content, job_id=raw.job_id)
                   if environment_file is not None else [])
    environment = apply_policy(entries, settings.env_policy)
    index = environment_index(environment.entries, environment.keys)
    rebuilt = {
        SCRIPT_FILE: carried + stored[len(script):],
        ENVIRONMENT_FILE: render_slurm_environment_file(environment.entries),
    }
    spool_files = tuple(SpoolFile(f.name, rebuilt.get(f.name, f.content)) for f in raw.files)

    directives = parse_directives(script, Scheduler.SLURM)
    from_script = metadata_from_directives(directives, Scheduler.SLURM)

    def env(key: str) -> str | None:
        return environment_value(index, key)

    submit_dir = _first(env("SLURM_SUBMIT_DIR"), env("PWD"))
    # sbatch records the effective job name in SLURM_JOB_NAME, and SBATCH_* input variables
    # override the script's directives. SLURM_ARRAY_* are NOT used: sbatch passes them on
    # unchanged from the submitting shell, so inside a job they name that job's array.
    metadata = JobMetadata(
        job_name=_first(env("SLURM_JOB_NAME"), from_script.job_name),
        account=_first(env("SBATCH_ACCOUNT"), from_script.account),
        partition=_first(env("SBATCH_PARTITION"), from_script.partition),
        work_dir=_first(from_script.work_dir, submit_dir),
        time_limit=_first(env("SBATCH_TIMELIMIT"), from_script.time_limit),
        nodes=from_script.nodes,
        ntasks=from_script.ntasks,
    )
    array_spec = _first(env("SBATCH_ARRAY_INX"), directives.get("array"))
    user, user_source = user_from_environment(index, submit_dir or metadata.work_dir)
    return _JobContent(
        script=script, carried_script=carried, environment=environment,
        spool_files=spool_files, directives=directives, metadata=metadata,
        user=user, user_source=user_source, owner=owner,
        # Slurm keeps a whole array in job.<array job id>, so the job id is the array's id.
        array_job_id=raw.job_id if array_spec else None, array_task_id=array_spec,
    )


def _index_ranges(indices: Sequence[int]) -> str:
    """1,2,3,5 -> '1-3,5'."""
    ranges: list[str] = []
    ordered = sorted(set(indices))
    start = previous = ordered[0]
    for index in [*ordered[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    return ",".join(ranges)


def _torque_content(raw: RawJob, settings: EventSettings) -> _JobContent:
    names = {f.name: parse_torque_file_name(f.name) for f in raw.files}
    script_file = next((f for f in raw.files
                        if (n := names[f.name]) is not None and n.suffix == SCRIPT_SUFFIX), None)
    records = [f for f in raw.files if (n := names[f.name]) is not None
               and n.suffix == RECORD_SUFFIX]
    if script_file is None or not records:
        raise SpoolReadError(raw.job_id, REASON_MALFORMED, "no .SC script or no .JB record")
    task_indices = [int(n.index) for f in records
                    if (n := names[f.name]) is not None and n.index]
    primary = next((f for f in records if not (n := names[f.name]) or not n.index), records[0])
    info = parse_torque_jb(primary.content, job_id=raw.job_id)
    environment = apply_policy(info.variables, settings.env_policy)
    index = environment_index(environment.entries, environment.keys)
    policy = settings.env_policy

    def filtered_record(content: bytes) -> bytes:
        filtered = apply_policy(parse_torque_jb(content, job_id=raw.job_id).variables, policy)
        return render_torque_jb(content, filtered.entries, filtered.hidden_keys)

    script = script_file.content
    carried = script[:settings.max_script_bytes]
    record_names = {f.name for f in records}
    spool_files = tuple(
        SpoolFile(f.name, carried) if f is script_file
        else SpoolFile(f.name, filtered_record(f.content)) if f.name in record_names
        else f
        for f in raw.files
    )
    directives = parse_directives(script, Scheduler.TORQUE)
    from_script = metadata_from_directives(directives, Scheduler.TORQUE)
    work_dir = _first(info.work_dir, environment_value(index, "PBS_O_WORKDIR"),
                      from_script.work_dir)
    metadata = JobMetadata(
        job_name=_first(info.job_name, from_script.job_name),
        account=_first(info.account, from_script.account),
        partition=_first(info.queue, from_script.partition),
        work_dir=work_dir,
        time_limit=_first(info.walltime, from_script.time_limit),
        nodes=_first(info.nodes, from_script.nodes),
        ntasks=_first(ppn_from_nodes(info.nodes), from_script.ntasks),
    )
    user: str | None = _first(info.euser, (info.job_owner or "").partition("@")[0])
    user_source = UserSource.SPOOL
    # The server's own record of the job: written by pbs_server, not by the submitter.
    owner = (JobOwner(user, None, OwnerSource.SPOOL_RECORD) if user is not None
             else UNKNOWN_OWNER)
    if user is None:
        user, user_source = user_from_environment(index, work_dir)
    is_array = "[]" in raw.job_id
    array_task_id = _first(info.array_request, directives.get("array"),
                           _index_ranges(task_indices) if task_indices else None)
    return _JobContent(
        script=script, carried_script=carried, environment=environment,
        spool_files=spool_files, directives=directives, metadata=metadata,
        user=user, user_source=user_source, owner=owner,
        array_job_id=raw.job_id if is_array else None,
        array_task_id=array_task_id if is_array else None,
    )


# Grid Engine's default account string: what the record holds when qsub had no -A.
GRIDENGINE_DEFAULT_ACCOUNT = "sge"


def _gridengine_content(raw: RawJob, settings: EventSettings) -> _JobContent:
    record_file = raw.file(RECORD_SPOOL_FILE)
    if record_file is None:
        raise SpoolReadError(raw.job_id, REASON_MALFORMED, "no job record")
    job: GridEngineJob = (raw.gridengine_job if raw.gridengine_job is not None
                          else parse_job_record(record_file.content, job_id=raw.job_id))
    script_file = raw.file(SCRIPT_SPOOL_FILE)
    script = script_file.content if script_file is not None else command_line(job)
    carried = script[:settings.max_script_bytes]
    environment = apply_policy(environment_entries(job), settings.env_policy)
    masked = render_record(record_file.content, job, environment)
    record, withheld = ((None, masked.reason) if isinstance(masked, RecordWithheld)
                        else (masked, None))
    rebuilt = {SCRIPT_SPOOL_FILE: carried, RECORD_SPOOL_FILE: record}
    spool_files = tuple(SpoolFile(f.name, content) for f in raw.files
                        if (content := rebuilt.get(f.name, f.content)) is not None)
    directives = parse_directives(script, Scheduler.GRIDENGINE) if script_file else {}
    account = job.account if job.account != GRIDENGINE_DEFAULT_ACCOUNT else None
    metadata = JobMetadata(
        # The record holds what qsub made of its options and the script's #$ lines together.
        job_name=job.job_name or None,
        account=_first(account, job.project, job.account),
        partition=",".join(job.hard_queues) or None,
        work_dir=job.work_dir,
        time_limit=_duration(job.hard_resources.get("h_rt")),
        nodes=None,
        ntasks=task_range(job.pe_slots) if job.pe_slots is not None else None,
    )
    # The record is the qmaster's, written from the submitting connection's credentials.
    owner = (JobOwner(job.owner, job.owner_uid, OwnerSource.SPOOL_RECORD)
             if job.owner else UNKNOWN_OWNER)
    return _JobContent(
        script=script, carried_script=carried, environment=environment,
        spool_files=spool_files, directives=directives, metadata=metadata,
        user=job.owner, user_source=UserSource.SPOOL if job.owner else UserSource.UNKNOWN,
        owner=owner,
        array_job_id=raw.job_id if job.array is not None else None,
        array_task_id=task_range(job.array) if job.array is not None else None,
        record_withheld=withheld,
    )


def _duration(seconds: str | None) -> str | None:
    """qmaster's h_rt (seconds) as H:MM:SS, the form the other schedulers' limits take."""
    if not seconds or not seconds.isdigit():
        return seconds or None
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


def build_job_event(raw: RawJob, settings: EventSettings, read_time_ms: int,
                    slurm_owner: JobOwner = UNKNOWN_OWNER) -> BuiltEvent:
    """The job event for one job read from the spool (see the module doc for what is kept),
    with why a Grid Engine job's record was left out of it, if it was.

    slurm_owner is a Slurm job's owner as slurmctld told it (producer.slurm_owners); a Torque
    job's owner comes from its own .JB record, a Grid Engine job's from its record.

    Raises SpoolReadError when the files cannot make an event (the readers already check this,
    so only a RawJob built elsewhere can hit it).
    """
    if raw.scheduler is Scheduler.SLURM:
        content = _slurm_content(raw, settings, slurm_owner)
    elif raw.scheduler is Scheduler.GRIDENGINE:
        content = _gridengine_content(raw, settings)
    else:
        content = _torque_content(raw, settings)
    metadata = content.metadata
    event = JobEvent(
        cluster=settings.cluster,
        scheduler=raw.scheduler,
        job_id=raw.job_id,
        job_key=make_job_key(settings.cluster, raw.scheduler, raw.job_id, raw.submit_time_ms),
        submit_time=raw.submit_time_ms,
        read_time=read_time_ms,
        script=content.carried_script,
        script_size=len(content.script),
        script_sha256=hashlib.sha256(content.script).hexdigest(),
        script_truncated=len(content.carried_script) < len(content.script),
        environment=canonical_environment(content.environment.entries),
        producer_host=settings.host,
        producer_version=settings.version,
        redacted_keys=content.environment.redacted_keys,
        spool_files=content.spool_files,
        array_job_id=content.array_job_id,
        array_task_id=content.array_task_id,
        user=content.user,
        user_source=content.user_source,
        owner=content.owner.name,
        owner_uid=content.owner.uid,
        owner_source=content.owner.source,
        job_name=metadata.job_name,
        account=metadata.account,
        partition=metadata.partition,
        work_dir=metadata.work_dir,
        time_limit=metadata.time_limit,
        nodes=metadata.nodes,
        ntasks=metadata.ntasks,
        directives=MappingProxyType(content.directives),
    )
    return BuiltEvent(event, content.record_withheld)
