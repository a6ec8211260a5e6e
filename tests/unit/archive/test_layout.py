"""Layouts: presets and templates -> relative paths, and the path-safety checks."""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.archive_layout import (
    NAME_MAX,
    PRESETS,
    Layout,
    Period,
    Role,
    UnsafeNameError,
    check_component,
    job_id_shard,
    safe_job_name,
)
from schemas.model import JobEvent, SpoolFile

MakeEvent = Callable[..., JobEvent]


def paths(layout: str, event: JobEvent, period: Period = Period.DAILY,
          zone: tzinfo = UTC) -> list[str]:
    placement = Layout.from_setting(layout, period, zone).place(event)
    return [str(f.path) for f in placement.files] + [str(placement.metadata)]


@pytest.mark.parametrize(("period", "directory"), [
    (Period.DAILY, "20240315/"), (Period.MONTHLY, "202403/"), (Period.YEARLY, "2024/"),
    (Period.NONE, ""),
])
def test_sarchive_preset_puts_slurm_files_under_the_period_directory(
        make_event: MakeEvent, period: Period, directory: str) -> None:
    assert paths("sarchive", make_event(), period) == [
        f"{directory}job.4711_script", f"{directory}job.4711_environment",
        f"{directory}job.4711_metadata.json"]


def test_per_user_preset_matches_job_archive(make_event: MakeEvent) -> None:
    assert paths("per-user", make_event()) == [
        "alice/2024/03/4711-myjob.sh", "alice/2024/03/4711-myjob.env",
        "alice/2024/03/4711-myjob.json"]


def test_xdmod_preset_stores_the_script_only_as_savescript(make_event: MakeEvent) -> None:
    assert paths("xdmod", make_event()) == [
        "20240315/4711.savescript", "20240315/4711.savescript.json"]


def test_sharded_preset_splits_the_reversed_job_id(make_event: MakeEvent) -> None:
    assert paths("sharded", make_event(job_id="12345678")) == [
        "clusterA/87/65/job.12345678_script", "clusterA/87/65/job.12345678_environment",
        "clusterA/87/65/job.12345678_metadata.json"]


BRUSSELS = ZoneInfo("Europe/Brussels")


def _ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("submitted_utc", "local_day"), [
    # 00:30 CET (UTC+1) is 23:30 UTC the day before: the fixtures' own submit time.
    (_ms(2024, 3, 15, 23, 30), "20240316"),
    # Spring forward on 2024-03-31 at 01:00 UTC: 00:30 CET that night, 00:30 CEST the next.
    (_ms(2024, 3, 30, 23, 30), "20240331"),
    (_ms(2024, 3, 31, 22, 30), "20240401"),
    (_ms(2024, 3, 31, 21, 59), "20240331"),  # 23:59 CEST, the first evening of summer time
    # Fall back on 2024-10-27 at 01:00 UTC: 02:30 is met twice that night, same day both.
    (_ms(2024, 10, 26, 22, 30), "20241027"),
    (_ms(2024, 10, 27, 0, 30), "20241027"),
    (_ms(2024, 10, 27, 1, 30), "20241027"),
    (_ms(2024, 10, 27, 23, 30), "20241028"),
])
def test_dates_are_the_submit_instant_in_the_layouts_time_zone_across_dst(
        make_event: MakeEvent, submitted_utc: int, local_day: str) -> None:
    event = make_event(submit_time=submitted_utc)
    placement = Layout.from_setting("{period}/{year}-{month}-{day}/{name}", Period.DAILY,
                                    BRUSSELS).place(event)
    year, month, day = local_day[:4], local_day[4:6], local_day[6:]
    assert str(placement.files[0].path) == f"{local_day}/{year}-{month}-{day}/job.4711_script"


@pytest.mark.parametrize(("period", "directory"), [
    (Period.DAILY, "20240101"), (Period.MONTHLY, "202401"), (Period.YEARLY, "2024")])
def test_every_period_follows_the_zone_at_new_year(
        make_event: MakeEvent, period: Period, directory: str) -> None:
    """23:30 UTC on 31 December is already next year in Brussels, and still this year in UTC."""
    event = make_event(submit_time=_ms(2023, 12, 31, 23, 30))
    assert paths("sarchive", event, period, BRUSSELS)[0] == f"{directory}/job.4711_script"
    assert paths("sarchive", event, period, UTC)[0].startswith(
        {Period.DAILY: "20231231/", Period.MONTHLY: "202312/", Period.YEARLY: "2023/"}[period])


def test_a_zone_west_of_utc_keeps_a_late_evening_job_on_its_local_day(
        make_event: MakeEvent) -> None:
    """02:00 UTC on the 16th is 22:00 on the 15th in New York (EDT)."""
    event = make_event(submit_time=_ms(2024, 3, 16, 2, 0))
    assert paths("xdmod", event, Period.DAILY, ZoneInfo("America/New_York"))[0] == (
        "20240315/4711.savescript")


def test_torque_files_keep_their_spool_names(make_torque_event: MakeEvent) -> None:
    assert paths("sarchive", make_torque_event()) == [
        "20240315/2[].master.SC", "20240315/2[].master.TA", "20240315/2-1.master.JB",
        "20240315/job.2[].master_metadata.json"]


def test_gridengine_files_are_the_script_the_environment_and_the_record(
        make_gridengine_event: MakeEvent) -> None:
    event = make_gridengine_event()
    assert paths("sarchive", event) == [
        "20240315/job.11_script", "20240315/job.11_environment", "20240315/job.11_record",
        "20240315/job.11_metadata.json"]
    files = Layout.from_setting("per-user", Period.DAILY, UTC).place(event).files
    assert [(f.role, f.content) for f in files] == [
        (Role.SCRIPT, event.script), (Role.ENVIRONMENT, event.environment),
        (Role.SPOOL, event.spool_files[1].content)]


def test_a_gridengine_binary_jobs_command_is_archived_as_its_script(
        make_gridengine_event: MakeEvent) -> None:
    event = make_gridengine_event(script=b"/bin/echo hello",
                                  spool_files=(SpoolFile("record", b"packed"),))
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    assert [(f.role, f.spool_name, f.content) for f in files] == [
        (Role.SCRIPT, "script", b"/bin/echo hello"),
        (Role.ENVIRONMENT, "environment", event.environment),
        (Role.SPOOL, "record", b"packed")]


def test_slurm_script_is_the_submitted_script_and_environment_the_spool_file(
        make_event: MakeEvent) -> None:
    event = make_event()
    files = Layout.from_setting("sarchive", Period.DAILY, UTC).place(event).files
    assert [(f.role, f.content) for f in files] == [
        (Role.SCRIPT, event.script), (Role.ENVIRONMENT, event.spool_files[1].content)]


@pytest.fixture
def far_east_local_time() -> Iterator[None]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.mark.usefixtures("far_east_local_time")
def test_dates_are_the_submit_time_in_utc_whatever_the_local_zone(
        make_event: MakeEvent) -> None:
    assert paths("xdmod", make_event())[0].startswith("20240315/")


def test_custom_template_with_every_event_field(make_event: MakeEvent) -> None:
    layout = ("{cluster}/{user}/{period}/{year}-{month}-{day}/{job_id_shard}/"
              "{job_name}.{job_id}.{ext}")
    assert paths(layout, make_event(), Period.MONTHLY)[0] == (
        "clusterA/alice/202403/2024-03-15/11/74/myjob.4711.sh")


def test_missing_user_and_job_name_get_placeholders(make_event: MakeEvent) -> None:
    assert paths("per-user", make_event(user=None, job_name=None))[0] == (
        "_unknown/2024/03/4711-_unnamed.sh")


@pytest.mark.parametrize("job_id", ["../4711", "..", ".", "47/11", "4711\0", "4711\n", ""])
def test_unsafe_job_ids_are_refused(make_event: MakeEvent, job_id: str) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(make_event(job_id=job_id))
    assert caught.value.reason == "unsafe-path"


@pytest.mark.parametrize(("value", "bad"), [
    ("a\nb/c", "\n"), ("x/y\0", "/"), ("del\x7fete", "\x7f"), ("\x1f", "\x1f"),
    ("tab\tand\0nul", "\t"),
])
def test_an_unsafe_component_is_refused_naming_its_first_bad_character(
        value: str, bad: str) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        check_component(value, "job id")
    assert str(caught.value) == f"job id {value!r} contains {bad!r}"
    assert caught.value.reason == "unsafe-path"


@pytest.mark.parametrize("value", ["4711", "é ünïcode ok", "a.b-c_d[1]", "~", "\x80", "\u2028"])
def test_components_without_separators_or_control_characters_are_accepted(value: str) -> None:
    assert check_component(value, "job id") == value


@pytest.mark.parametrize("field", ["cluster", "user"])
def test_unsafe_cluster_or_user_is_refused_even_when_the_layout_does_not_use_it(
        make_event: MakeEvent, field: str) -> None:
    with pytest.raises(UnsafeNameError, match=field):
        Layout.from_setting("xdmod", Period.DAILY, UTC).place(make_event(**{field: "../../etc"}))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", ".sarchive-tmp-x"])
def test_unsafe_torque_spool_names_are_refused(make_torque_event: MakeEvent, name: str) -> None:
    event = make_torque_event(spool_files=(SpoolFile(name, b"x"),))
    with pytest.raises(UnsafeNameError, match=r"temporary|contains"):
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(event)


def test_overlong_job_id_is_refused_as_too_long(make_event: MakeEvent) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(make_event(job_id="9" * 300))
    assert caught.value.reason == "name-too-long"


def test_file_name_too_long_once_composed_is_refused(make_event: MakeEvent) -> None:
    # 240 bytes of job id fit as a field but not with "job." and "_environment" around it.
    with pytest.raises(UnsafeNameError) as caught:
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(make_event(job_id="9" * 240))
    assert caught.value.reason == "name-too-long"


def test_submit_time_beyond_the_calendar_is_refused(make_event: MakeEvent) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(make_event(submit_time=2**62))
    assert caught.value.reason == "invalid-submit-time"


def test_layout_giving_two_files_one_path_refuses_the_event(make_event: MakeEvent) -> None:
    event = make_event(spool_files=(SpoolFile("environment", b"a"),
                                    SpoolFile("metadata.json", b"b")))
    with pytest.raises(UnsafeNameError) as caught:
        Layout.from_setting("sarchive", Period.DAILY, UTC).place(event)
    assert caught.value.reason == "path-conflict"


@pytest.mark.parametrize(("job_name", "expected"), [
    ("a/b", "a_b"), ("..", "_"), (".", "_"), ("tab\there", "tab_here"), (None, "_unnamed"),
    ("", "_unnamed"), ("é" * 60, "é" * 50),
])
def test_job_names_are_made_safe_not_refused(job_name: str | None, expected: str) -> None:
    assert safe_job_name(job_name) == expected


@pytest.mark.parametrize(("job_id", "shard"), [
    ("12345678", "87/65"), ("4711", "11/74"), ("7", "70/00"), ("4711.server", "11/74"),
    ("4711[].server", "11/74"), ("x1", "_/_"),
])
def test_job_id_shard_reads_the_number_backwards(job_id: str, shard: str) -> None:
    assert job_id_shard(job_id) == shard


@pytest.mark.parametrize(("template", "message"), [
    ("{period}/{nope}", "unknown field"),
    ("{period}/{job_id:>10}", "no format"),
    ("{period}/{job_id!r}", "no format"),
    ("/{period}/{name}", "relative"),
    ("{period}/{name}/", "relative"),
    ("../{name}", r"'\.\.'"),
    ("{user}/./{name}", r"'\.'"),
    ("{user}/{year}", "job_id"),
    ("{period}/{name", "layout"),
])
def test_bad_templates_are_refused_at_start(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Layout.from_setting(template, Period.DAILY, UTC)


def test_every_preset_compiles_for_every_period() -> None:
    for preset in PRESETS:
        for period in Period:
            assert Layout.from_setting(preset, period, UTC).template == PRESETS[preset]


# Plausible names half of the time, anything at all otherwise.
_names = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,30}", fullmatch=True),
                   st.text(st.characters(codec="utf-8"), max_size=300))
_event_fields = st.fixed_dictionaries({
    "cluster": _names, "user": st.none() | _names, "job_id": _names,
    "job_name": st.none() | _names, "spool_name": _names})
_layouts = st.sampled_from([*PRESETS, "{user}/{cluster}/{job_name}-{job_id}.{ext}"])


# The make_event fixture is a stateless factory, so sharing it across examples is safe.
@settings(max_examples=500,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=_event_fields, layout=_layouts)
def test_any_placed_path_stays_below_the_root(
        make_event: MakeEvent, fields: dict[str, str | None], layout: str) -> None:
    """Whatever the message says, a placed path is refused or a clean relative path."""
    spool_name = fields.pop("spool_name")
    assert spool_name is not None
    event = make_event(**fields, spool_files=(SpoolFile("environment", b"e"),
                                              SpoolFile(spool_name, b"s")))
    try:
        placement = Layout.from_setting(layout, Period.DAILY, UTC).place(event)
    except UnsafeNameError:
        hypothesis.event("refused")
        return
    hypothesis.event("placed")
    for path in [f.path for f in placement.files] + [placement.metadata]:
        for component in (*path.directory, path.name):
            assert component not in ("", ".", "..")
            assert "/" not in component and "\0" not in component
            assert len(component.encode("utf-8", "surrogatepass")) <= NAME_MAX
        assert not posixpath.normpath(str(path)).startswith(("..", "/"))
