"""Producer configuration: defaults, validation, Kafka guarantees, exit code 2 on bad config."""

from __future__ import annotations

from pathlib import Path

import confluent_kafka
import pytest

from producer.config import ProducerConfig, kafka_producer_properties, load_producer_config
from producer.environment import DEFAULT_REDACT, DEFAULT_REDACT_VALUES
from producer.main import main
from producer.service import IDLE_WAKEUP
from runtime.config import ConfigError, describe_config
from schemas.limits import MAX_MESSAGE_BYTES


def load(*argv: str, environ: dict[str, str] | None = None) -> ProducerConfig:
    return load_producer_config(list(argv), environ=environ or {})


def test_defaults_redact_secrets_and_use_the_scheduler_default_spool() -> None:
    config = load("--cluster", "hpc1")
    assert (config.env_redact, config.env_redact_values) == (DEFAULT_REDACT, DEFAULT_REDACT_VALUES)
    policy = config.env_policy()
    assert policy.redact is not None and policy.redact.search("GITHUB_TOKEN")
    assert policy.redact_values is not None and policy.redact_values.search(b"AKIAIOSFODNN7EXAMPLE")
    assert policy.exclude is None
    assert config.spool_dir == Path("/var/spool/slurmctld")
    torque = load("--cluster", "hpc1", "--scheduler", "torque", "--torque-subdirs")
    assert torque.spool_dir == Path("/var/spool/torque/server_priv/jobs")
    assert torque.torque_subdirs


def test_empty_env_redact_turns_redaction_off() -> None:
    assert load("--cluster", "c", "--env-redact", "").env_policy().redact is None


def test_empty_env_redact_values_turns_redaction_by_value_off() -> None:
    policy = load("--cluster", "c", "--env-redact-values", "").env_policy()
    assert policy.redact_values is None and policy.redact is not None


def test_env_redact_values_is_a_bytes_pattern_from_flag_environment_or_file(
        tmp_path: Path) -> None:
    config_file = tmp_path / "producer.toml"
    config_file.write_text('cluster = "c"\nenv-redact-values = "sk-[a-z]{8}"\n')
    policy = load("--config", str(config_file)).env_policy()
    assert policy.redact_values is not None and policy.redact_values.search(b"\xff sk-abcdefgh")
    from_env = load("--cluster", "c", environ={"SARCHIVE_ENV_REDACT_VALUES": "zz(?P<secret>9)"})
    assert from_env.env_redact_values == "zz(?P<secret>9)"


def test_every_setting_comes_from_flag_environment_or_file(tmp_path: Path) -> None:
    config_file = tmp_path / "producer.toml"
    config_file.write_text('cluster = "from-file"\nready-timeout = 5\n'
                           'env_exclude = "^(SSH_|XDG_)"\nspool = "/spool"\n')
    config = load("--config", str(config_file), "--outbox-max-events", "7",
                  environ={"SARCHIVE_READY_TIMEOUT": "2.5"})
    assert (config.cluster, config.ready_timeout, config.outbox_max_events,
            config.spool_dir) == ("from-file", 2.5, 7, Path("/spool"))
    assert config.env_policy().exclude is not None


@pytest.mark.parametrize(("argv", "message"), [
    (["--cluster", "c", "--env-redact", "("], "env_redact"),
    (["--cluster", "c", "--env-exclude", "[a-"], "env_exclude"),
    (["--cluster", "c", "--env-redact-values", "(?P<secret>"], "env_redact_values"),
    (["--cluster", "c", "--env-redact-values", "x*"], "env_redact_values"),
    (["--cluster", "a:b"], "cluster"),
    (["--cluster", " "], "cluster"),
    (["--cluster", "c", "--ready-timeout", "0"], "ready_timeout"),
    (["--cluster", "c", "--outbox-max-bytes", "-1"], "outbox_max_bytes"),
    (["--cluster", "c", "--max-script-bytes", "0"], "max_script_bytes"),
    (["--cluster", "c", "--torque-subdirs"], "torque_subdirs"),
    (["--cluster", "c", "--scheduler", "pbs"], "scheduler"),
])
def test_invalid_settings_are_config_errors_naming_the_setting(argv: list[str],
                                                               message: str) -> None:
    with pytest.raises((ConfigError, SystemExit)) as raised:
        load(*argv)
    if raised.type is ConfigError:
        assert message in str(raised.value)


def test_kafka_properties_carry_the_delivery_guarantees() -> None:
    config = load("--cluster", "c", "--brokers", "k1:9092,k2:9092")
    props = kafka_producer_properties(config)
    assert props["enable.idempotence"] == "true"
    assert props["acks"] == "all"
    assert props["compression.type"] == "zstd"
    assert int(props["message.max.bytes"]) == MAX_MESSAGE_BYTES > 2 * config.max_script_bytes
    assert props["bootstrap.servers"] == "k1:9092,k2:9092"


def test_compression_choice_and_pass_through_properties_win() -> None:
    props = kafka_producer_properties(load("--cluster", "c", "--compression", "lz4",
                                     "--kafka-property", "message.max.bytes=50000000",
                                     "--kafka-property", "client.id=p1"))
    assert props["compression.type"] == "lz4"
    assert props["message.max.bytes"] == "50000000"
    assert props["client.id"] == "p1"


@pytest.mark.parametrize("weakening", ["acks=1", "acks=0", "enable.idempotence=false",
                                       "enable.idempotence=0", "enable.idempotence=f",
                                       "request.required.acks=1",
                                       "topic.request.required.acks=0"])
def test_a_pass_through_that_weakens_the_delivery_guarantee_is_refused(weakening: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka_property {weakening} is not allowed"):
        kafka_producer_properties(load("--cluster", "c", "--kafka-property", weakening))


def test_restating_the_guarantees_in_a_pass_through_is_accepted() -> None:
    props = kafka_producer_properties(load("--cluster", "c", "--kafka-property", "acks=all",
                                     "--kafka-property", "enable.idempotence=true"))
    assert (props["acks"], props["enable.idempotence"]) == ("all", "true")


@pytest.mark.parametrize("restated", ["acks=-1", "request.required.acks=all",
                                      "topic.request.required.acks=-1", "acks=ALL",
                                      "enable.idempotence=1", "enable.idempotence=T"])
def test_the_guarantee_restated_under_an_alias_or_an_equal_value_is_accepted(
        restated: str) -> None:
    """librdkafka reads these as acks=all and idempotence on: the producer is created with
    the guarantee."""
    props = kafka_producer_properties(load("--cluster", "c", "--kafka-property", restated))
    assert (props["acks"], props["enable.idempotence"]) == ("all", "true")
    assert not {"request.required.acks", "topic.request.required.acks"} & props.keys()
    confluent_kafka.Producer(props)  # librdkafka accepts what is left


def test_secrets_are_masked_in_the_described_config() -> None:
    config = load("--cluster", "c", "--sasl-password", "hunter2",
                  "--kafka-property", "sasl.oauthbearer.client.secret=abc")
    described = str(describe_config(config))
    assert "hunter2" not in described and "abc" not in described


def test_main_exits_2_with_a_clear_message_on_config_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--spool", "/nonexistent"]) == 2
    error = capsys.readouterr().err
    assert "configuration error" in error and "--cluster" in error


def test_main_exits_2_on_an_invalid_regex(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cluster", "c", "--env-exclude", "("]) == 2
    assert "env_exclude" in capsys.readouterr().err


def test_help_documents_every_producer_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--cluster", "--scheduler", "--spool", "--torque-subdirs",
                 "--gridengine-bootstrap", "--state-dir",
                 "--max-script-bytes", "--env-exclude", "--env-redact", "--env-redact-values",
                 "--ready-timeout",
                 "--outbox-max-bytes", "--outbox-max-events", "--shutdown-timeout",
                 "--retry-interval", "--compression", "--brokers", "--topic",
                 "--security-protocol", "--sasl-password-file", "--kafka-property",
                 "--metrics-port", "--log-file", "--log-level", "--log-format"):
        assert flag in text


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_example_config_file_is_valid_and_agrees_with_the_systemd_unit() -> None:
    config = load("--config", str(DEPLOY / "producer.example.toml"),
                  "--sasl-password-file", "/dev/null")
    unit = (DEPLOY / "sarchive-producer.service").read_text()
    # '-': a spool missing at start must not fail the unit (226/NAMESPACE): it is waited for.
    assert f"ReadOnlyPaths=-{config.spool_dir}\n" in unit
    assert f"ReadWritePaths={config.state_dir}" in unit
    for directive in ("Restart=on-failure", "RestartPreventExitStatus=2",
                      "After=slurmctld.service network-online.target", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "ExecReload=/bin/kill -HUP $MAINPID",
                      "Type=notify"):
        assert f"{directive}\n" in unit
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    # The loop wakes at least every IDLE_WAKEUP and pings at half the interval.
    assert float(settings["WatchdogSec"]) >= 10 * IDLE_WAKEUP
    assert config.shutdown_timeout < float(settings["TimeoutStopSec"])
