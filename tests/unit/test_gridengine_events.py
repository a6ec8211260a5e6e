"""Grid Engine jobs from a classic spool laid out with the real records and scripts of
tests/fixtures/gridengine (captured from SGE 8.1.9's qsub) to job events: script, environment
under the default policy (in the event and in the carried record), metadata, owner, identity."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from producer.config import load_producer_config
from producer.cull import Span, unpack_element
from producer.environment import EnvPolicy, apply_policy
from producer.errors import REASON_MALFORMED, REASON_VANISHED, JobIncompleteError, SpoolReadError
from producer.events import EventSettings, build_job_event
from producer.gridengine_record import (
    JB_ACCOUNT,
    JB_DESCRIPTOR_8_1_9,
    GridEngineJob,
    parse_job_record,
)
from producer.gridengine_spool import (
    RecordWithheld,
    environment_entries,
    read_gridengine_job,
    render_record,
)
from producer.jobs import JobRef
from producer.read_outcomes import ReadEvent, read_job
from schemas.codec import JobEventCodec
from schemas.model import REDACTED_MARKER, JobEvent, OwnerSource, Scheduler, UserSource
from testkit.secrets import LEAKED, LEAKED_KEYS

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gridengine"
READ_MS = 1_800_000_000_000
SETTINGS = EventSettings(
    cluster="grid", max_script_bytes=1 << 20, host="qmaster01", version="1.2.3",
    env_policy=load_producer_config(["--cluster", "grid"], environ={}).env_policy())


def fixture_job_id(case: str) -> int:
    return int(json.loads((FIXTURES / case / "qsub.json").read_text())["job_id"])


def lay_out(spool: Path, case: str, job_id: int | None = None) -> JobRef:
    """The fixture's record and script where the qmaster keeps them: jobs/00/0000/<id>
    (a directory for an array job), job_scripts/<id>."""
    job_id = job_id if job_id is not None else fixture_job_id(case)
    digits = f"{job_id:010d}"
    leaf = spool / "jobs" / digits[:2] / digits[2:6]
    leaf.mkdir(parents=True, exist_ok=True)
    record = FIXTURES / case / "record"
    if record.is_dir():
        shutil.copytree(record, leaf / digits[6:])
    else:
        shutil.copyfile(record, leaf / digits[6:])
    (spool / "job_scripts").mkdir(exist_ok=True)
    if (FIXTURES / case / "script").exists():
        shutil.copyfile(FIXTURES / case / "script", spool / "job_scripts" / str(job_id))
    return JobRef(Scheduler.GRIDENGINE, f"jobs/{digits[:2]}/{digits[2:6]}/{digits[6:]}", leaf,
                  digits[6:])


def event_of(spool: Path, case: str, settings: EventSettings = SETTINGS) -> JobEvent:
    job = lay_out(spool, case)
    assert job.base is not None
    return build_job_event(read_gridengine_job(job.directory, job.base), settings, READ_MS).event


def entries(event: JobEvent) -> list[bytes]:
    return event.environment.split(b"\0")[:-1]


def record_of(event: JobEvent) -> bytes:
    return next(f.content for f in event.spool_files if f.name == "record")


def test_a_plain_job_carries_the_spools_script_and_the_records_environment(
        tmp_path: Path) -> None:
    event = event_of(tmp_path, "plain")
    script = (FIXTURES / "plain" / "script").read_bytes()
    record = (FIXTURES / "plain" / "record").read_bytes()
    job = parse_job_record(record)
    assert (event.scheduler, event.job_id) == (Scheduler.GRIDENGINE, str(job.job_id))
    assert event.job_key == f"grid:gridengine:{job.job_id}:{job.submit_time_ms}"
    assert event.submit_time == job.submit_time_ms
    assert event.script == script and event.script_size == len(script)
    assert entries(event) == [name + b"=" + value for name, value in job.environment]
    assert [(f.name, f.content) for f in event.spool_files] == [
        ("script", script), ("record", record)]
    assert (event.owner, event.owner_uid, event.owner_source) == (
        "root", 0, OwnerSource.SPOOL_RECORD)
    assert (event.user, event.user_source) == ("root", UserSource.SPOOL)
    assert event.job_name == "from_directive"
    assert (event.account, event.partition, event.time_limit) == ("sge", None, None)


def test_qsub_options_become_the_events_metadata(tmp_path: Path) -> None:
    event = event_of(tmp_path, "options_cwd")
    assert (event.job_name, event.account, event.partition) == ("named_job", "acct42", "all.q")
    assert (event.work_dir, event.time_limit, event.ntasks) == (
        "/tmp/sarchive-ge-fixtures", "1:00:00", "1-2")
    assert (event.array_job_id, event.array_task_id) == (None, None)


def test_without_an_account_the_project_stands_for_it(tmp_path: Path) -> None:
    event = event_of(tmp_path, "options_wd")
    job = parse_job_record((FIXTURES / "options_wd" / "record").read_bytes())
    assert job.account in (None, "sge")
    assert event.account == (job.project or job.account)


@pytest.mark.parametrize(("case", "tasks"), [("array", "1-3"), ("array_step", "2-10:4"),
                                              ("array_running", "1-3")])
def test_an_array_job_is_one_event_with_its_task_range(
        tmp_path: Path, case: str, tasks: str) -> None:
    """qsub -t as given; a running array's per-task records are not the job's."""
    event = event_of(tmp_path, case)
    assert (event.array_job_id, event.array_task_id) == (event.job_id, tasks)
    assert [f.name for f in event.spool_files] == ["script", "record"]


def test_a_binary_jobs_command_line_stands_for_its_script(tmp_path: Path) -> None:
    event = event_of(tmp_path, "binary")
    assert event.script == b"/bin/echo hello binary world"
    assert [f.name for f in event.spool_files] == ["record"]
    assert event.directives == {}


def test_a_script_that_is_not_utf8_is_carried_byte_for_byte(tmp_path: Path) -> None:
    event = event_of(tmp_path, "not_utf8")
    assert event.script == (FIXTURES / "not_utf8" / "script").read_bytes()
    assert b"\xff\xfe" in event.script


def test_secrets_are_redacted_in_the_event_and_masked_in_the_carried_record(
        tmp_path: Path) -> None:
    """qsub -v A=1,SECRET_TOKEN=x: the default policy hides SECRET_TOKEN's value; the record
    carried is the spool's with that value masked in place, and still decodes."""
    event = event_of(tmp_path, "export_named")
    assert event.redacted_keys == ("SECRET_TOKEN",)
    assert b"SECRET_TOKEN=<redacted>" in entries(event) and b"A=1" in entries(event)
    carried = parse_job_record(record_of(event))
    original = parse_job_record((FIXTURES / "export_named" / "record").read_bytes())
    assert dict(carried.environment)[b"SECRET_TOKEN"] == REDACTED_MARKER
    assert dataclasses.replace(carried, environment=original.environment) == original
    assert b"SECRET_TOKEN\0x\0" not in record_of(event)


def test_leaked_secrets_leave_neither_the_encoded_event_nor_its_rebuilt_spool_files(
        tmp_path: Path) -> None:
    """The old defaults' leaks, in a real record's environment list (qsub -V), masked by the
    default policy: not in the bytes the outbox and the topic hold (the current schema's
    encoding), nor in the record and environment a decoded event carries."""
    record = (FIXTURES / "export_all" / "record").read_bytes()
    replaced = (b"SARCHIVE_GRIDENGINE_SPOOL", b"SGE_EXECD_PORT", b"SGE_ROOT", b"SGE_ARCH",
                b"SGE_CELL", b"SGE_QMASTER_PORT")
    # Strings in a packed record have no length: a pair is replaced by another in place.
    pairs = [pair for pair in parse_job_record(record).environment if pair[0] in replaced]
    for (name, value), (leaked, _) in zip(pairs, LEAKED, strict=True):
        pair = b"\0" + name + b"\0" + value + b"\0"
        assert record.count(pair) == 1
        record = record.replace(pair, b"\0" + leaked.replace(b"=", b"\0", 1) + b"\0")
    job = lay_out(tmp_path, "export_all")
    assert job.base is not None
    (job.directory / job.base).write_bytes(record)
    for entry, _ in LEAKED:
        assert entry in environment_entries(parse_job_record(record))
    codec = JobEventCodec()
    encoded = codec.encode(build_job_event(read_gridengine_job(job.directory, job.base), SETTINGS,
                                       READ_MS).event)
    event = codec.decode(encoded)
    for _, secret in LEAKED:
        assert secret not in encoded
        assert secret not in event.environment and secret not in record_of(event)
    assert event.redacted_keys == LEAKED_KEYS
    masked_url = b"postgres://user:" + REDACTED_MARKER + b"@host/db"
    assert dict(parse_job_record(record_of(event)).environment)[b"DATABASE_URL"] == masked_url
    assert b"LATIN1=caf\xe9\0" in event.environment  # the checks above can find what is there


def test_an_excluded_variable_leaves_neither_its_name_nor_its_value(tmp_path: Path) -> None:
    policy = EnvPolicy(exclude=re.compile(r"^MULTILINE$"), redact=None)
    event = event_of(tmp_path, "export_all", dataclasses.replace(SETTINGS, env_policy=policy))
    assert not [e for e in entries(event) if e.startswith(b"MULTILINE=")]
    record = record_of(event)
    assert b"MULTILINE" not in record and b"second line" not in record
    assert (REDACTED_MARKER, REDACTED_MARKER) in parse_job_record(record).environment


def test_a_hidden_variable_is_masked_alone_not_inside_a_longer_name(tmp_path: Path) -> None:
    """HOME=/root is also the end of __SGE_PREFIX__O_HOME=/root in the packed list."""
    policy = EnvPolicy(exclude=None, redact=re.compile(r"^HOME$"))
    event = event_of(tmp_path, "export_all", dataclasses.replace(SETTINGS, env_policy=policy))
    carried = dict(parse_job_record(record_of(event)).environment)
    assert carried[b"HOME"] == REDACTED_MARKER
    assert carried[b"__SGE_PREFIX__O_HOME"] == b"/root"


HIDE = {"exclude": lambda name: EnvPolicy(exclude=re.compile(f"^{name}$"), redact=None),
        "redact": lambda name: EnvPolicy(exclude=None, redact=re.compile(f"^{name}$"))}


@pytest.mark.parametrize(("case", "name", "value", "hide"), [
    ("plain", b"sge", b"", "exclude"),  # `\0sge\0\0`: the account `sge` and the next field
    ("plain", b"A", b"", "exclude"),  # `\0A\0\0`: in the descriptor
    ("plain", b"A", b"", "redact"),
    ("options_cwd", b"acct42", b"/tmp/sarchive-ge-fixtures", "redact"),  # account, then cwd
    ("options_cwd", b"NAME", b"named_job", "exclude"),  # the job name's value
])
def test_a_hidden_entry_is_masked_where_it_lies_whatever_other_fields_spell_the_same_bytes(
        gridengine_record_with_variable: Callable[..., bytes], case: str, name: bytes,
        value: bytes, hide: str) -> None:
    """Records withheld when the entry's bytes were replaced wherever they occurred: the
    masked record decodes to the filtered environment with every other field unchanged, and
    the hidden entry's value is gone from it (other fields holding the same bytes keep them)."""
    record = gridengine_record_with_variable(case, name, value)
    job = parse_job_record(record)
    filtered = apply_policy(environment_entries(job), HIDE[hide](name.decode()))
    assert filtered.hidden_keys == (name.decode(),)
    rendered = render_record(record, job, filtered)
    assert isinstance(rendered, bytes)
    carried = parse_job_record(rendered)
    hidden = ((REDACTED_MARKER, REDACTED_MARKER) if hide == "exclude"
              else (name, REDACTED_MARKER))
    assert carried.environment == tuple(hidden if pair == (name, value) else pair
                                        for pair in job.environment)
    assert dataclasses.replace(carried, environment=job.environment) == job
    if value:
        assert rendered.count(value) == record.count(value) - 1


def test_a_job_whose_entry_spells_other_fields_is_read_into_an_event_with_its_masked_record(
        tmp_path: Path, gridengine_record_with_variable: Callable[..., bytes]) -> None:
    job = lay_out(tmp_path, "plain")
    assert job.base is not None
    (job.directory / job.base).write_bytes(gridengine_record_with_variable("plain", b"sge"))
    policy = EnvPolicy(exclude=re.compile(r"^sge$"), redact=None)
    outcome = read_job(job, dataclasses.replace(SETTINGS, env_policy=policy), JobEventCodec(),
                       READ_MS)
    assert isinstance(outcome, ReadEvent) and outcome.record_withheld is None
    event = JobEventCodec().decode(outcome.value)
    assert [f.name for f in event.spool_files] == ["script", "record"]
    carried = parse_job_record(record_of(event))
    assert (carried.account, carried.work_dir) == ("sge", None)
    assert (REDACTED_MARKER, REDACTED_MARKER) in carried.environment
    assert not [entry for entry in entries(event) if entry.startswith(b"sge=")]


def record_with_environment(record: bytes, environment: list[tuple[bytes, bytes]]) -> bytes:
    """A real record with its first environment entries given these names and values: each
    entry's packed `\\0NAME\\0VALUE\\0` occurs once in it (asserted), found by search, not by
    the decoder under test, and spliced back to front."""
    original = parse_job_record(record).environment[:len(environment)]
    offsets = []
    for name, value in original:
        pair = b"\0" + name + b"\0" + value + b"\0"
        assert record.count(pair) == 1
        offsets.append(record.index(pair) + 1)
    for (name, value), offset, (new_name, new_value) in reversed(list(zip(
            original, offsets, environment, strict=True))):
        end = offset + len(name) + 1 + len(value)
        record = record[:offset] + new_name + b"\0" + new_value + record[end:]
    return record


NAMES = st.sampled_from([b"A", b"sge", b"HOME", b"SECRET_TOKEN"]) | st.from_regex(
    rb"\A[A-Za-z_][A-Za-z0-9_]{0,11}\Z")
NO_NUL = st.lists(st.integers(1, 255), max_size=16).map(bytes)  # a packed string's bytes
SECRETS = st.lists(st.integers(1, 255), min_size=8, max_size=24).map(bytes)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_masked_record_never_holds_a_hidden_value_and_decodes_to_the_filtered_environment(
        data: st.DataObject) -> None:
    """Random names, values and hiding choices in a real record (qsub -V's, 23 entries): no
    hidden value of 8 bytes or more is left in the carried record, which decodes to the
    filtered environment with every other field unchanged. Hidden by key, every entry of a
    hidden name holds a secret."""
    fixture = (FIXTURES / "export_all" / "record").read_bytes()
    names = data.draw(st.lists(NAMES, min_size=1, max_size=23), label="names")
    choices = {name: data.draw(st.sampled_from(["keep", "redact", "exclude"]),
                               label=name.decode()) for name in names}
    environment = [(name, data.draw(NO_NUL if choices[name] == "keep" else SECRETS))
                   for name in names]
    record = record_with_environment(fixture, environment)
    job = parse_job_record(record)

    def hidden(choice: str) -> re.Pattern[str] | None:
        chosen = [re.escape(n.decode()) for n, c in choices.items() if c == choice]
        return re.compile(f"^(?:{'|'.join(chosen)})$") if chosen else None

    policy = EnvPolicy(exclude=hidden("exclude"), redact=hidden("redact"))
    choice_of = {**{name: "keep" for name, _ in job.environment}, **choices}
    expected = tuple({"keep": (name, value), "redact": (name, REDACTED_MARKER),
                      "exclude": (REDACTED_MARKER, REDACTED_MARKER)}[choice_of[name]]
                     for name, value in job.environment)
    secrets = [value for name, value in environment if choices[name] != "keep"]
    visible = [fixture, REDACTED_MARKER, *(s for pair in expected for s in pair)]
    assume(not any(secret in text for secret in secrets for text in visible))
    rendered = render_record(record, job, apply_policy(environment_entries(job), policy))
    assert isinstance(rendered, bytes)
    carried = parse_job_record(rendered)
    assert carried.environment == expected
    assert dataclasses.replace(carried, environment=job.environment) == job
    for secret in secrets:
        assert secret in record and secret not in rendered


def test_a_job_whose_record_is_withheld_is_read_into_an_event_without_it_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's outcome carries the reason; the event keeps the script and the filtered
    environment, and no record."""
    monkeypatch.setattr("producer.events.render_record",
                        lambda *_: RecordWithheld("the masked record does not decode"))
    outcome = read_job(lay_out(tmp_path, "export_named"), SETTINGS, JobEventCodec(), READ_MS)
    assert isinstance(outcome, ReadEvent)
    assert outcome.record_withheld == "the masked record does not decode"
    event = JobEventCodec().decode(outcome.value)
    assert [f.name for f in event.spool_files] == ["script"]
    assert b"SECRET_TOKEN=<redacted>" in entries(event)


def _misplaced(job: GridEngineJob, entry: int, spans: tuple[Span, Span]) -> GridEngineJob:
    """The job with one entry's spans elsewhere: what a decoder reporting wrong positions
    would hand over."""
    moved = list(job.environment_spans)
    moved[entry] = spans
    return dataclasses.replace(job, environment_spans=tuple(moved))


def test_a_record_not_read_back_as_masked_is_withheld_saying_why_never_with_a_value(
        gridengine_record_with_variable: Callable[..., bytes]) -> None:
    """The check after masking catches wrong positions, which only a faulty decoder could
    report: the secret left in place, a terminator overwritten, another field rewritten. With
    the decoder's own spans the record is carried."""
    secret = b"s3cret-value"
    record = gridengine_record_with_variable("plain", b"SECRET_TOKEN", secret)
    job = parse_job_record(record)
    entry = [name for name, _ in job.environment].index(b"SECRET_TOKEN")
    filtered = apply_policy(environment_entries(job), SETTINGS.env_policy)
    assert filtered.hidden_keys == ("SECRET_TOKEN",)
    masked = render_record(record, job, filtered)
    assert isinstance(masked, bytes) and secret not in masked
    name, value = job.environment_spans[entry]
    assert render_record(record, _misplaced(job, entry, job.environment_spans[0]),
                         filtered) == RecordWithheld(
        "the masked record's environment is not the filtered one")
    assert render_record(record, _misplaced(job, entry, (name, Span(value.start, value.end + 1))),
                         filtered) == RecordWithheld("the masked record does not decode")
    # Excluded, `<redacted>=<redacted>` is rewritten with what it holds: only the misplaced
    # value's rewrite shows, in the account.
    record = gridengine_record_with_variable("plain", REDACTED_MARKER, REDACTED_MARKER)
    job = parse_job_record(record)
    filtered = apply_policy(environment_entries(job), HIDE["exclude"]("<redacted>"))
    name = job.environment_spans[entry][0]
    account = unpack_element(record, JB_DESCRIPTOR_8_1_9).spans[JB_ACCOUNT]
    assert render_record(record, _misplaced(job, entry, (name, account)), filtered) == \
        RecordWithheld("masking the environment would change account")


def test_a_record_at_another_jobs_path_is_malformed(tmp_path: Path) -> None:
    job = lay_out(tmp_path, "plain", job_id=99)
    assert job.base is not None
    with pytest.raises(SpoolReadError) as raised:
        read_gridengine_job(job.directory, job.base)
    assert raised.value.reason == REASON_MALFORMED


def test_a_missing_script_beside_its_record_is_incomplete_and_a_missing_record_vanished(
        tmp_path: Path) -> None:
    job = lay_out(tmp_path, "plain")
    assert job.base is not None
    (tmp_path / "job_scripts" / job.label).unlink()
    with pytest.raises(JobIncompleteError):
        read_gridengine_job(job.directory, job.base)
    (job.directory / job.base).unlink()
    with pytest.raises(SpoolReadError) as raised:
        read_gridengine_job(job.directory, job.base)
    assert raised.value.reason == REASON_VANISHED


def test_an_array_directory_without_its_common_yet_is_incomplete(tmp_path: Path) -> None:
    job = lay_out(tmp_path, "array")
    assert job.base is not None
    (job.directory / job.base / "common").unlink()
    with pytest.raises(JobIncompleteError):
        read_gridengine_job(job.directory, job.base)
    assert job.submit_time_ms() is None and not job.removed_from_spool()
    (job.directory / job.base).rmdir()
    assert job.removed_from_spool()


def test_a_jobs_submit_time_is_its_records_whatever_the_files_mtimes(tmp_path: Path) -> None:
    job = lay_out(tmp_path, "array_running")
    record = parse_job_record((FIXTURES / "array_running" / "record" / "common").read_bytes())
    assert job.submit_time_ms() == record.submit_time_ms
    assert not job.removed_from_spool()
    assert job.label == str(record.job_id)
