"""The shared configuration model: flags > environment > TOML file > defaults, masked secrets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from runtime.config import (
    ConfigError,
    build_parser,
    describe_config,
    load_config,
    setting,
    usage_parser,
)
from runtime.kafka import KafkaSettings, kafka_client_properties
from runtime.logs import LogSettings, configure_logging
from schemas.version import VERSION


@dataclasses.dataclass(frozen=True)
class ExampleConfig(KafkaSettings, LogSettings):
    cluster: str = setting("", required=True, help="cluster name")
    max_bytes: int = setting(100, help="a limit")
    enabled: bool = setting(True, help="a switch")
    state: Path | None = setting(None, help="a directory")
    pattern: tuple[str, ...] = setting((), help="repeatable")


def load(argv: list[str], environ: dict[str, str] | None = None) -> ExampleConfig:
    return load_config(ExampleConfig, argv, prog="t", description="t", environ=environ or {})


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('cluster = "from-file"\nmax-bytes = 7\ntopic = "file-topic"\n')
    config = load(["--config", str(config_file), "--cluster", "from-flag"],
                  {"SARCHIVE_CLUSTER": "from-env", "SARCHIVE_MAX_BYTES": "9"})
    assert (config.cluster, config.max_bytes, config.topic, config.brokers) == (
        "from-flag", 9, "file-topic", "127.0.0.1:9092")


def test_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('cluster = "x"\n')
    assert load([], {"SARCHIVE_CONFIG": str(config_file)}).cluster == "x"


def test_missing_required_setting_names_all_three_ways_to_give_it() -> None:
    with pytest.raises(ConfigError, match=r"--cluster.*SARCHIVE_CLUSTER.*'cluster'"):
        load([])


def test_unknown_key_in_the_file_is_an_error_not_ignored(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('cluster = "x"\nclustr = "typo"\n')
    with pytest.raises(ConfigError, match="clustr"):
        load(["--config", str(config_file)])


def test_invalid_toml_and_unreadable_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("cluster = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(["--config", str(bad)])
    with pytest.raises(ConfigError, match="cannot read"):
        load(["--config", str(tmp_path / "missing.toml")])


def test_values_are_converted_and_invalid_ones_rejected() -> None:
    config = load(["--cluster", "c", "--no-enabled", "--state", "~/s"],
                  {"SARCHIVE_MAX_BYTES": "0x10"})
    assert (config.enabled, config.max_bytes, config.state) == (False, 16, Path("~/s").expanduser())
    with pytest.raises(ConfigError, match="SARCHIVE_MAX_BYTES"):
        load(["--cluster", "c"], {"SARCHIVE_MAX_BYTES": "lots"})
    with pytest.raises(ConfigError, match="SARCHIVE_ENABLED"):
        load(["--cluster", "c"], {"SARCHIVE_ENABLED": "perhaps"})


def test_choices_are_enforced_from_every_source() -> None:
    with pytest.raises(ConfigError, match="security_protocol"):
        load(["--cluster", "c"], {"SARCHIVE_SECURITY_PROTOCOL": "TLS"})


def test_repeatable_flag_keeps_commas_but_environment_splits_on_them() -> None:
    assert load(["--cluster", "c", "--pattern", "a{1,2}", "--pattern", "b"]).pattern == (
        "a{1,2}", "b")
    assert load(["--cluster", "c"], {"SARCHIVE_PATTERN": "a, b"}).pattern == ("a", "b")


def test_described_config_masks_secrets_and_secret_looking_properties() -> None:
    config = load(["--cluster", "c", "--sasl-password", "hunter2",
                   "--kafka-property", "sasl.oauthbearer.client.secret=s3",
                   "--kafka-property", "ssl.key.location=/k"])
    text = json.dumps(describe_config(config))
    assert "hunter2" not in text
    assert "s3" not in text
    assert "ssl.key.location=/k" in text


def test_kafka_properties_map_security_settings_and_pass_through(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("from-file\nignored\n")
    config = load(["--cluster", "c", "--security-protocol", "SASL_SSL",
                   "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "u",
                   "--sasl-password-file", str(password_file), "--ssl-ca", "/ca.pem",
                   "--kafka-property", "socket.keepalive.enable=true"])
    assert kafka_client_properties(config) == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "from-file",
        "ssl.ca.location": "/ca.pem", "socket.keepalive.enable": "true"}


def test_malformed_pass_through_property_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        kafka_client_properties(load(["--cluster", "c", "--kafka-property", "novalue"]))


def test_json_log_lines_carry_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(log_format="json"))
    logging.getLogger("t").info("job archived", extra={"job_id": "4711"})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["message"], line["job_id"], line["level"]) == ("job archived", "4711", "INFO")


def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    log_file = tmp_path / "p.log"
    handler = configure_logging(LogSettings(log_file=log_file))
    assert handler is not None
    logging.getLogger("t").warning("before")
    log_file.rename(tmp_path / "p.log.1")
    handler.reopen()
    logging.getLogger("t").warning("after")
    assert "after" in log_file.read_text()
    assert "after" not in (tmp_path / "p.log.1").read_text()
    logging.getLogger().removeHandler(handler)
    handler.close()


@pytest.mark.parametrize("parser", [build_parser(ExampleConfig, "sarchive-sample", "a sample"),
                                    usage_parser(prog="sarchive-sample")])
def test_version_flag_prints_the_installed_version_and_exits_0(
        parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"sarchive-sample {VERSION}\n"
