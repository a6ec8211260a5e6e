"""sarchive-archive's configuration: required root, octal modes, layouts checked at start."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from consumers.archive.config import ArchiveConfig
from consumers.archive.main import main
from runtime.config import ConfigError, describe_config, load_config
from runtime.time_zones import local_time_zone


def load(*argv: str, environ: dict[str, str] | None = None) -> ArchiveConfig:
    return load_config(ArchiveConfig, list(argv), prog="sarchive-archive", description="",
                       environ=environ or {})


def test_defaults_are_sarchive_daily_with_metadata_and_0640_0750() -> None:
    config = load("--archive", "/srv/archive")
    assert (config.archive, config.layout, config.period) == (
        Path("/srv/archive"), "sarchive", "daily")
    assert (config.file_mode, config.dir_mode, config.metadata) == ("0640", "0750", True)
    assert (config.group, config.dead_letter_topic) == ("sarchive-archive", "sarchive.jobs.dlq")
    assert config.time_zone == "local"


def test_archive_root_is_required() -> None:
    with pytest.raises(ConfigError, match="archive is required"):
        load()


@pytest.mark.parametrize(("argv", "message"), [
    (["--file-mode", "0999"], "file_mode"),
    (["--dir-mode", "x"], "dir_mode"),
    (["--layout", "{user}/{nope}"], "unknown field"),
    (["--layout", "../{name}"], "'..'"),
])
def test_bad_settings_are_refused_before_start(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load("--archive", "/a", *argv)


def test_unknown_period_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="weekly"):
        load("--archive", "/a", environ={"SARCHIVE_PERIOD": "weekly"})


def test_settings_from_environment_and_no_metadata_flag() -> None:
    config = load("--no-metadata", environ={"SARCHIVE_ARCHIVE": "/a", "SARCHIVE_LAYOUT": "xdmod",
                                            "SARCHIVE_PERIOD": "none"})
    assert (config.archive, config.layout, config.period, config.metadata) == (
        Path("/a"), "xdmod", "none", False)


def test_secrets_are_masked_in_the_start_up_line() -> None:
    described = describe_config(load("--archive", "/a", "--sasl-password", "hunter2"))
    assert described["sasl_password"] == "********"
    assert described["archive"] == "/a"


def test_main_reports_configuration_errors_with_exit_code_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--archive", "/a", "--layout", "{nope}"]) == 2
    assert "unknown field" in capsys.readouterr().err


def test_main_exits_1_before_touching_kafka_when_the_archive_root_is_missing(
        tmp_path: Path) -> None:
    assert main(["--archive", str(tmp_path / "missing"), "--brokers", "127.0.0.1:9"]) == 1


def test_a_time_zone_name_sets_the_layouts_zone() -> None:
    config = load("--archive", "/a", "--time-zone", "Europe/Brussels")
    assert config.compiled_layout().zone == ZoneInfo("Europe/Brussels")
    assert load("--archive", "/a", environ={"SARCHIVE_TIME_ZONE": "UTC"}
                ).compiled_layout().zone is UTC


@pytest.mark.parametrize("zone", ["Europe/Nowhere", "Europe", "../../etc/passwd", "utc", ""])
def test_an_unknown_time_zone_exits_2_with_one_line(
        zone: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--archive", "/a", "--time-zone", zone]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a time zone name" in err
    assert len(err.splitlines()) == 1


def test_local_is_tz_when_set_whatever_etc_localtime_says(tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    localtime.symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
    assert local_time_zone({"TZ": "Europe/Brussels"}, localtime) == ZoneInfo("Europe/Brussels")
    assert local_time_zone({"TZ": ":America/New_York"}, localtime) == ZoneInfo(
        "America/New_York")
    assert local_time_zone({"TZ": ""}, localtime) is UTC  # as the C library reads it
    assert local_time_zone({}, localtime) == ZoneInfo("Asia/Tokyo")


def test_local_without_tz_reads_etc_localtime_as_a_link_a_copy_or_its_absence(
        tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    assert local_time_zone({}, localtime) is UTC  # missing, as in many containers
    shutil.copyfile("/usr/share/zoneinfo/Europe/Brussels", localtime)
    copied = local_time_zone({}, localtime)
    assert copied.utcoffset(datetime(2024, 7, 1)) == timedelta(hours=2)
    assert copied.utcoffset(datetime(2024, 1, 1)) == timedelta(hours=1)
    os.unlink(localtime)
    localtime.symlink_to("../usr/share/zoneinfo/Europe/Brussels")  # Debian's relative link
    assert str(local_time_zone({}, localtime)) == "Europe/Brussels"


@pytest.mark.parametrize("tz", ["CET-1CEST,M3.5.0,M10.5.0/3", "Mars/Olympus"])
def test_a_tz_that_names_no_zone_is_a_configuration_error(tz: str) -> None:
    with pytest.raises(ValueError, match="TZ"):
        local_time_zone({"TZ": tz}, Path("/nonexistent"))
