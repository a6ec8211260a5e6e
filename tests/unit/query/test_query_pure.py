"""The CLI's pure pieces: job specs, criteria, the Elasticsearch queries, terminal-safe
rendering, the environment diff and the layout's sidecar patterns."""

from __future__ import annotations

import base64
import struct
import time
from datetime import UTC, datetime

import pytest

import query.diff
from query.criteria import (
    Criteria,
    CriteriaError,
    contents_match,
    glob_regex,
    metadata_matches,
    module_matches,
    parse_when,
    words,
)
from query.diff import environment_diff, script_diff
from query.es_query import criteria_query, search_request, show_request
from query.formatting import (
    FormatError,
    check_format,
    environment_lines,
    owner_text,
    table,
)
from query.jobspec import JobSpec, JobSpecError, parse_job_spec
from query.record import JobRecord, rebuilt_spool_files, record_json
from query.terminal import safe_bytes, safe_line
from schemas.archive_layout import Layout, Period, period_directory, sidecar_pattern

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("4711", JobSpec("4711", "4711")),
    ("4711_7", JobSpec("4711_7", "4711")),
    ("4711.7", JobSpec("4711.7", "4711")),
    ("hydra:4711.7", JobSpec("hydra:4711.7", "4711", "hydra")),
    ("4711.server", JobSpec("4711.server", "4711.server")),
    ("4711+1", JobSpec("4711+1", "4712")),
    ("hydra:4711", JobSpec("hydra:4711", "4711", "hydra")),
    ("hydra:slurm:4711:1710545400000",
     JobSpec("hydra:slurm:4711:1710545400000", "4711", "hydra",
             "hydra:slurm:4711:1710545400000", 1710545400000)),
    ("123[].server", JobSpec("123[].server", "123[].server")),
    ("123[7].server.example", JobSpec("123[7].server.example", "123[].server.example")),
    ("hydra:123[7]", JobSpec("hydra:123[7]", "123[]", "hydra")),
])
def test_job_spec_forms_resolve_to_the_archived_job_id(text: str, expected: JobSpec) -> None:
    assert parse_job_spec(text) == expected


@pytest.mark.parametrize("text", ["", ":4711", "47 11", "../x", "4711;rm"])
def test_malformed_job_specs_are_usage_errors(text: str) -> None:
    with pytest.raises(JobSpecError):
        parse_job_spec(text)


def test_when_accepts_ages_dates_and_times_and_until_dates_include_their_day() -> None:
    assert parse_when("7d", NOW, UTC) == int(datetime(2024, 6, 8, 12, tzinfo=UTC).timestamp()
                                             * 1000)
    assert parse_when("2024-06-01", NOW, UTC) == 1_717_200_000_000
    assert parse_when("2024-06-01", NOW, UTC, end_of_day=True) == 1_717_286_400_000
    assert parse_when("2024-06-01T01:00", NOW, UTC) == 1_717_203_600_000
    with pytest.raises(CriteriaError):
        parse_when("yesterday", NOW, UTC)


def test_module_spec_matches_its_versions_but_not_longer_names() -> None:
    assert module_matches("gcc", "gcc/9.3.0")
    assert module_matches("gcc/9", "gcc/9.3.0")
    assert module_matches("gcc/9.3.0", "gcc/9.3.0")
    assert not module_matches("gcc/9", "gcc/90")
    assert not module_matches("gcc", "gccgo/1")


def test_name_globs_know_only_star_question_mark_and_escapes() -> None:
    assert glob_regex("run-*").match("run-17")
    assert glob_regex("run-?").match("run-1") and not glob_regex("run-?").match("run-12")
    assert glob_regex("[ab]").match("[ab]") and not glob_regex("[ab]").match("a")
    assert glob_regex(r"a\*").match("a*") and not glob_regex(r"a\*").match("ab")


def test_script_words_are_cut_like_the_standard_analyzer() -> None:
    assert words("module load GROMACS/2023.1-foss; srun gmx_mpi") == {
        "module", "load", "gromacs", "2023.1", "foss", "srun", "gmx_mpi"}
    assert "gcc:openmpi" in words("LOADED=gcc:openmpi")


def test_archive_matching_applies_every_criterion() -> None:
    meta = {"user": "alice", "owner": "bob", "cluster": "c", "account": "a", "partition": "p",
            "job_name": "md-run", "submit_time": 1_000}
    assert metadata_matches(Criteria(user="alice", owner="bob", name="md-*", since_ms=1_000,
                                     until_ms=1_001), meta)
    assert not metadata_matches(Criteria(owner="alice"), meta)
    assert not metadata_matches(Criteria(until_ms=1_000), meta)
    assert not metadata_matches(Criteria(partition="q"), meta)
    criteria = Criteria(module="gcc/9", text="srun", env=(("A", "1"), ("B", None)))
    assert contents_match(criteria, b"srun x", {"A": "1", "B": ""}, ["gcc/9.3"])
    assert not contents_match(criteria, b"srun x", {"A": "2", "B": ""}, ["gcc/9.3"])
    assert not contents_match(criteria, b"srun x", {"A": "1"}, ["gcc/9.3"])


def test_es_queries_are_filters_of_the_criteria() -> None:
    query = criteria_query(Criteria(user="alice", owner="bob", since_ms=5,
                                    env=(("K", None), ("L", "v")), module="gcc", text="a b"))
    filters = query["bool"]["filter"]
    assert {"term": {"user": "alice"}} in filters
    assert {"term": {"owner": "bob"}} in filters
    assert {"range": {"submit_time": {"gte": 5, "format": "epoch_millis"}}} in filters
    assert {"exists": {"field": "environment.K"}} in filters
    assert {"term": {"environment.L": "v"}} in filters
    assert {"match": {"script": {"query": "a b", "operator": "and"}}} in filters
    page = search_request(Criteria(), 10, [1, "k"])
    assert page["search_after"] == [1, "k"] and page["size"] == 10
    assert show_request(parse_job_spec("c:4711"))["query"]["bool"]["filter"] == [
        {"term": {"job_id": "4711"}}, {"term": {"cluster": "c"}}]


def test_a_job_keys_query_is_narrowed_to_its_submit_time_so_one_shard_is_searched() -> None:
    assert show_request(parse_job_spec("c:slurm:4711:1710545400000"))["query"]["bool"][
        "filter"] == [{"term": {"job_key": "c:slurm:4711:1710545400000"}},
                      {"range": {"submit_time": {"gte": 1710545400000, "lte": 1710545400000,
                                                 "format": "epoch_millis"}}}]


def test_terminal_rendering_shows_escapes_instead_of_passing_them() -> None:
    rendered = safe_bytes(b"echo \x1b]0;title\x07 \x1b[2J \x9b caf\xe9\r\n\tok\n")
    assert "\x1b" not in rendered and "\x07" not in rendered and "\r" not in rendered
    assert rendered == "echo \\e]0;title\\x07 \\e[2J \\x9b caf\\xe9\\r\n\tok\n"
    assert safe_line("a\nb\\c\u202e") == "a\\nb\\\\c\\u202e"
    assert safe_bytes("\u009b".encode()) == "\\x9b"


def test_environment_listing_is_one_line_per_variable() -> None:
    assert environment_lines([("A", "x\ny"), ("B", "\x1b[2J")]) == "A=x\\ny\nB=\\e[2J\n"


def test_environment_diff_by_key_and_safe_script_diff() -> None:
    diff = environment_diff([("A", "1"), ("B", "2"), ("C", "3")],
                            [("A", "1"), ("B", "4"), ("D", "5")])
    assert diff.added == (("D", "5"),)
    assert diff.removed == (("C", "3"),)
    assert diff.changed == (("B", "2", "4"),)
    text = script_diff(b"a\n", b"a\n\x1b[2J\n", "one", "two")
    assert "+\\e[2J\n" in text and "\x1b" not in text


def test_format_templates_name_plain_fields_only() -> None:
    assert check_format("{job_id} {user}") == "{job_id} {user}"
    for bad in ("{job_id.__class__}", "{nope}", "{user!r}", "{user:>9}"):
        with pytest.raises(FormatError):
            check_format(bad)


def test_table_cuts_lines_to_the_terminal_width() -> None:
    rows = [{"submit_time": 0, "cluster": "c", "job_id": "1", "user": "u",
             "job_name": "n" * 200}]
    assert all(len(line) <= 80 for line in table(rows, UTC, 80).splitlines())


@pytest.mark.parametrize(("preset", "period", "components", "level"), [
    ("sarchive", Period.DAILY, ("*", "job.4711_metadata.json"), 0),
    ("sarchive", Period.NONE, ("job.4711_metadata.json",), None),
    ("per-user", Period.DAILY, ("*", "*", "*", "4711-*.json"), None),
    ("xdmod", Period.DAILY, ("*", "4711.savescript.json"), None),
    ("sharded", Period.DAILY, ("hydra", "11", "74", "job.4711_metadata.json"), None),
])
def test_sidecar_patterns_follow_each_layout(preset: str, period: Period,
                                             components: tuple[str, ...],
                                             level: int | None) -> None:
    pattern = sidecar_pattern(Layout.from_setting(preset, period, UTC), "4711",
                              "hydra" if preset == "sharded" else None)
    assert pattern.components == components
    assert pattern.period_level == level


def test_sidecar_pattern_escapes_glob_characters_of_ids() -> None:
    pattern = sidecar_pattern(Layout.from_setting("sarchive", Period.DAILY, UTC), "12[3]")
    assert pattern.components[-1] == "job.12[[]3]_metadata.json"


def test_period_directory_is_the_instant_in_its_own_zone() -> None:
    assert period_directory(Period.DAILY, NOW) == "20240615"
    assert period_directory(Period.MONTHLY, NOW) == "202406"


def test_show_names_the_scheduler_owner_apart_from_the_user_claim() -> None:
    assert owner_text({"owner": "alice", "owner_uid": 1000, "owner_source": "SCHEDULER"}) == (
        "alice (uid 1000) from SCHEDULER")
    assert owner_text({"owner": "alice", "owner_uid": None,
                       "owner_source": "SPOOL_RECORD"}) == "alice from SPOOL_RECORD"
    assert owner_text({"owner": None, "owner_source": "UNKNOWN"}) == (
        "unknown (administrators only)")
    assert owner_text({}) == "unknown (administrators only)"  # archived before version 2


@pytest.mark.parametrize(("scheduler", "job_id", "files"), [
    ("slurm", "4711", [("script", b"echo\n\0"), ("environment", b"\1\0\0\0A=1\0")]),
    ("torque", "4711.srv", [("4711.srv.SC", b"echo\n")]),
    ("gridengine", "11", [("script", b"echo\n")]),
])
def test_spool_files_rebuilt_from_a_document_are_each_schedulers_own(
        scheduler: str, job_id: str, files: list[tuple[str, bytes]]) -> None:
    """Elasticsearch keeps no spool copies: Slurm's script and environment come back in its
    formats, Torque's .SC and Grid Engine's job_scripts/ copy are the script itself."""
    rebuilt = rebuilt_spool_files({"scheduler": scheduler, "job_id": job_id}, b"echo\n",
                                  b"A=1\0")
    if scheduler == "slurm":  # the count in the host's byte order
        files[1] = ("environment", struct.pack("=I", 1) + b"A=1\0")
    assert list(rebuilt) == files


def record_with_environment(environment: tuple[tuple[str, str], ...],
                            entries: bytes) -> JobRecord:
    return JobRecord(metadata={"job_id": "1"}, script=b"echo\n", environment=environment,
                     environment_entries=entries, modules=(), spool_files=(), location="x")


def test_json_holds_the_exact_environment_entries_only_where_the_map_loses_some() -> None:
    """As the Elasticsearch document does: both backends print the same --json."""
    plain = record_json(record_with_environment((("A", "1"),), b"A=1\0"))
    assert plain["environment"] == {"A": "1"} and "environment_b64" not in plain
    lossy = record_json(record_with_environment((("A", "caf\ufffd"),), b"A=caf\xe9\0"))
    assert base64.b64decode(lossy["environment_b64"]) == b"A=caf\xe9\0"


CONTEXT_LINES = [f"same {n}\n" for n in range(6)]


@pytest.mark.parametrize(("before", "after"), [
    ([*CONTEXT_LINES, "a1\n", "a2\n", "a3\n", *CONTEXT_LINES],
     [*CONTEXT_LINES, "b1\n", "b2\n", *CONTEXT_LINES]),   # a changed middle
    (["a1\n", "a2\n", *CONTEXT_LINES], ["b1\n", *CONTEXT_LINES]),   # at the start
    ([*CONTEXT_LINES, "a1\n"], [*CONTEXT_LINES, "b1\n", "b2"]),     # at the end, no newline
    (CONTEXT_LINES, [*CONTEXT_LINES[:3], "new\n", *CONTEXT_LINES[3:]]),  # an insertion
    (["a\n"], ["b\n"]),
])
def test_a_diff_past_the_matching_limit_is_the_one_hunk_difflib_gives(
        monkeypatch: pytest.MonkeyPatch, before: list[str], after: list[str]) -> None:
    """Where difflib's answer is one hunk, the linear-time one past the limit is the same."""
    old, new = "".join(before).encode(), "".join(after).encode()
    matched = script_diff(old, new, "one", "two")
    monkeypatch.setattr(query.diff, "LINE_MATCH_LIMIT", 0)
    assert script_diff(old, new, "one", "two") == matched


def test_two_huge_hostile_scripts_are_diffed_in_linear_time() -> None:
    """300,000 lines each, every one of them a repeat that differs (difflib alone took more
    than ten minutes): seconds, and the diff still removes the one and adds the other."""
    old = b"".join(b"x %d \x1b[2J\n" % (n * 7 % 1000) for n in range(300_000))
    new = b"".join(b"x %d \x1b[2J\n" % (n * 13 % 1000) for n in range(300_000))
    started = time.monotonic()
    text = script_diff(old, new, "one", "two")
    assert time.monotonic() - started < 30
    assert "\x1b" not in text
    assert text.count("\n-x ") == 299_999 and text.count("\n+x ") == 299_999
