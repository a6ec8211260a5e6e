"""sarchive-archive's configuration: required root, octal modes, layouts checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.archive.config import ArchiveConfig
from consumers.archive.main import main
from runtime.config import ConfigError, describe_config, load_config


def load(*argv: str, environ: dict[str, str] | None = None) -> ArchiveConfig:
    return load_config(ArchiveConfig, list(argv), prog="sarchive-archive", description="",
                       environ=environ or {})


def test_defaults_are_sarchive_daily_with_metadata_and_0640_0750() -> None:
    config = load("--archive", "/srv/archive")
    assert (config.archive, config.layout, config.period) == (
        Path("/srv/archive"), "sarchive", "daily")
    assert (config.file_mode, config.dir_mode, config.metadata) == ("0640", "0750", True)
    assert (config.group, config.dead_letter_topic) == ("sarchive-archive", "sarchive.jobs.dlq")


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
