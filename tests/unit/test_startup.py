"""The one start-up path: configuration and start-up errors exit 2 with one line, fatal runtime
errors exit 1, for a service built in-process and for every real console script."""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runtime.config import ConfigError, setting, unknown_environment
from runtime.errors import ServiceFatalError
from runtime.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from runtime.startup import ConsoleScript, ServiceSettings, StartupContext, run_console_script

SCRIPT = ConsoleScript("sarchive-example", "an example service")
BIN = Path(sys.executable).parent


@dataclasses.dataclass(frozen=True)
class ExampleConfig(ServiceSettings):
    brokers: str = setting("127.0.0.1:9092", help="bootstrap servers")
    batch: int = setting(1, help="a positive number")

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1, got {self.batch}")


class ExampleService:
    def __init__(self, outcome: int | BaseException) -> None:
        self.outcome = outcome

    def run(self) -> int:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def start(outcome: int | BaseException, *argv: str,
          environ: dict[str, str] | None = None) -> tuple[int, StartupContext | None]:
    built: list[StartupContext] = []

    def build(config: ExampleConfig, context: StartupContext) -> ExampleService:
        built.append(context)
        return ExampleService(outcome)

    code = run_console_script(SCRIPT, ExampleConfig, build, list(argv), environ or {})
    return code, (built[0] if built else None)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """The start-up path installs its own root handler; other tests keep theirs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_service_that_stops_on_request_exits_with_its_own_status() -> None:
    code, context = start(EXIT_OK)
    assert code == EXIT_OK
    assert context is not None and isinstance(context.registry, CollectorRegistry)


def test_build_info_names_the_console_script_as_the_service() -> None:
    _, context = start(EXIT_OK)
    assert context is not None
    labels = [sample.labels for metric in context.registry.collect()
              for sample in metric.samples if sample.name == "sarchive_build_info"]
    assert [label["service"] for label in labels] == ["sarchive-example"]


@pytest.mark.parametrize(("argv", "named"), [
    (["--batch", "0"], "batch must be at least 1"),
    (["--batch", "x"], "batch"),
    (["--no-such-flag"], "--no-such-flag"),
    # An abbreviation must not silently mean a longer flag.
    (["--broker", "k:9092"], "--broker"),
])
def test_a_configuration_error_exits_2_with_one_line_naming_it(
        argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, context = start(EXIT_OK, *argv)
    assert (code, context) == (EXIT_CONFIG, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert err.startswith("sarchive-example: configuration error: ")


def test_a_log_file_that_cannot_be_opened_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(EXIT_OK, "--log-file", str(tmp_path / "no" / "such" / "x.log"))
    assert code == EXIT_CONFIG
    assert "log_file" in capsys.readouterr().err


def test_a_metrics_port_in_use_is_a_start_up_error_and_the_service_never_runs(
        taken_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(RuntimeError("must not run"), "--metrics-port", str(taken_port),
                    "--metrics-address", "127.0.0.1")
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"metrics_port {taken_port}" in err and "in use" in err


def test_a_configuration_error_found_while_running_exits_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(ConfigError("kafka_property: refused"))
    assert code == EXIT_CONFIG
    assert "configuration error: kafka_property: refused" in capsys.readouterr().err


def test_a_fatal_error_exits_1_with_one_line_and_no_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(ServiceFatalError("state directory /x is locked"))
    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "fatal: state directory /x is locked" in err and "Traceback" not in err


def test_an_unexpected_error_exits_1_with_its_traceback_logged(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(KeyError("bug"))
    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err


def test_a_misspelt_environment_variable_is_reported_with_the_setting_it_resembles(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = start(EXIT_OK, environ={"SARCHIVE_BROKER": "k:9092", "SARCHIVE_OTHER": "1"})
    assert code == EXIT_OK
    err = capsys.readouterr().err
    assert "SARCHIVE_BROKER is set but names no setting of sarchive-example (did you mean" \
        " SARCHIVE_BROKERS?)" in err
    assert "SARCHIVE_OTHER is set but names no setting" in err


def test_a_misspelt_variable_behind_a_configuration_error_is_named_on_its_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, built = start(EXIT_OK, environ={"SARCHIVE_BATC": "0", "SARCHIVE_BATCH": "0",
                                          "SARCHIVE_OTHER": "1"})
    assert (code, built) == (EXIT_CONFIG, None)
    assert capsys.readouterr().err.splitlines() == [
        "sarchive-example: configuration error: batch must be at least 1, got 0;"
        " SARCHIVE_BATC is set but names no setting (did you mean SARCHIVE_BATCH?)"]


def test_known_variables_and_the_config_file_variable_are_not_reported() -> None:
    environ = {"SARCHIVE_BROKERS": "k:9092", "SARCHIVE_CONFIG": "/etc/x.toml",
               "SARCHIVE_LOG_LEVEL": "INFO", "OTHER": "x"}
    assert unknown_environment(ExampleConfig, environ) == []


def run_script(name: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), *argv], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.parametrize(("argv", "named"), [
    (["--kafka-property", "no.such.prop=1"], 'No such configuration property: "no.such.prop"'),
    (["--kafka-property", "foo"], "kafka_property 'foo' is not KEY=VALUE"),
    (["--kafka-property", "acks=1"], "kafka_property acks=1 is not allowed"),
    (["--sasl-password-file", "/no/such/file"], "sasl_password_file /no/such/file"),
    (["--sasl-password-file", "/"], "Is a directory"),
    (["--broker", "k:9092"], "unrecognized arguments: --broker"),
    (["--security-protocol", "SSL", "--ssl-ca", "/no/such/ca.pem"],
     "ssl_ca: the Kafka producer refuses its configuration: Failed to create producer:"
     " ssl.ca.location failed"),
    (["--state-dir", "/proc/x"], "state_dir /proc/x: cannot use it:"),
])
def test_the_producer_console_script_exits_2_on_each_reproduced_configuration_error(
        argv: list[str], named: str, tmp_path: Path) -> None:
    result = run_script("sarchive-producer", "--cluster", "c", "--state-dir",
                        str(tmp_path / "state"), "--spool", str(tmp_path / "spool"),
                        "--brokers", "127.0.0.1:9", *argv, cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert named in one_error_line(result)


@pytest.mark.parametrize(("argv", "named"), [
    (["--gridengine-bootstrap", "/no/such/bootstrap"],
     "gridengine_bootstrap /no/such/bootstrap: cannot read it (No such file or directory)"),
    (["--gridengine-bootstrap", "/"], "gridengine_bootstrap /: cannot read it (Is a directory)"),
])
def test_the_producer_console_script_exits_2_on_a_grid_engine_bootstrap_it_cannot_read(
        argv: list[str], named: str, tmp_path: Path) -> None:
    result = run_script("sarchive-producer", "--cluster", "c", "--scheduler", "gridengine",
                        "--state-dir", str(tmp_path / "state"), "--brokers", "127.0.0.1:9",
                        *argv, cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert named in one_error_line(result)


def test_the_producer_console_script_exits_2_on_a_password_file_that_is_not_text(
        tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_bytes(b"\xff\xfe secret\n")
    result = run_script("sarchive-producer", "--cluster", "c", "--state-dir",
                        str(tmp_path / "state"), "--spool", str(tmp_path / "spool"),
                        "--brokers", "127.0.0.1:9", "--sasl-password-file", str(password_file),
                        cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"sasl_password_file {password_file} is not UTF-8 text" in one_error_line(result)


# What each console script needs beside the setting under test to get that far.
def needs(script: str, tmp_path: Path) -> list[str]:
    return {"sarchive-archive": ["--archive", str(tmp_path)],
            "sarchive-es": [],
            "sarchive-web": ["--es-url", "http://127.0.0.1:9", "--port", "0"]}[script]


@pytest.mark.parametrize("script", ["sarchive-archive", "sarchive-es", "sarchive-web"])
def test_each_console_script_exits_2_on_a_log_file_it_cannot_open(
        script: str, tmp_path: Path) -> None:
    result = run_script(script, *needs(script, tmp_path), "--log-file", "/no/such/dir/x.log",
                        cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "log_file /no/such/dir/x.log" in one_error_line(result)


@pytest.mark.parametrize("script", ["sarchive-producer", "sarchive-archive", "sarchive-es",
                                    "sarchive-web"])
def test_every_console_script_exits_2_when_its_metrics_port_is_taken(
        script: str, taken_port: int, tmp_path: Path) -> None:
    own = ["--cluster", "c", "--state-dir", str(tmp_path / "state"), "--spool",
           str(tmp_path / "spool")] if script == "sarchive-producer" else needs(script, tmp_path)
    brokers = [] if script == "sarchive-web" else ["--brokers", "127.0.0.1:9"]
    result = run_script(script, *own, *brokers, "--metrics-port", str(taken_port),
                        "--metrics-address", "127.0.0.1", cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"metrics_port {taken_port}" in one_error_line(result)


def test_sarchive_web_exits_2_when_its_port_is_taken(taken_port: int, tmp_path: Path) -> None:
    result = run_script("sarchive-web", "--es-url", "http://127.0.0.1:9", "--listen-address",
                        "127.0.0.1", "--port", str(taken_port), cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in one_error_line(result)


@pytest.mark.parametrize("script", ["sarchive-es", "sarchive-web"])
def test_each_elasticsearch_console_script_exits_2_on_a_ca_file_it_cannot_load(
        script: str, tmp_path: Path) -> None:
    own = ["--port", "0"] if script == "sarchive-web" else ["--brokers", "127.0.0.1:9"]
    result = run_script(script, *own, "--es-url", "https://127.0.0.1:9", "--es-ca-certs",
                        "/no/such/ca.pem", cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "es_ca_certs /no/such/ca.pem: cannot load it" in one_error_line(result)


@pytest.mark.parametrize(("argv", "line"), [
    (["show", "1", "--es-ur", "http://127.0.0.1:9"],
     "sarchive: unrecognized arguments: --es-ur http://127.0.0.1:9"),
    (["show", "1", "--config", "/no/such.toml"],
     "sarchive: cannot read config file /no/such.toml: No such file or directory"),
    (["show", "1", "--es-url", "https://127.0.0.1:9", "--es-ca-certs", "/no/such/ca.pem"],
     "sarchive: es_ca_certs /no/such/ca.pem: cannot load it: No such file or directory"),
])
def test_sarchive_exits_2_with_one_line_on_a_configuration_error(
        argv: list[str], line: str, tmp_path: Path) -> None:
    result = run_script("sarchive", *argv, cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert result.stderr.splitlines() == [line]
