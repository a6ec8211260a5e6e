"""What the packages are made of agrees with the project: the RPM spec with pyproject.toml and
deploy/, every systemd unit with its console script and its example configuration, and the
wheelhouse's glibc rule with EL9. (tests/integration/packaging builds and runs the packages.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from consumers.archive.config import ArchiveConfig
from consumers.elastic.config import EsConsumerConfig
from infra.packages import RPM_PYTHON, SPEC, project_version, runs_on_el9
from producer.config import ProducerConfig
from runtime.config import load_config
from web.config import WebConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
CONFIG_TYPES: dict[str, type[Any]] = {
    "sarchive-producer": ProducerConfig, "sarchive-archive": ArchiveConfig,
    "sarchive-es": EsConsumerConfig, "sarchive-web": WebConfig}
UNITS = sorted(DEPLOY.glob("*.service"))
SPEC_TEXT = SPEC.read_text()


def spec_global(name: str) -> str:
    found = re.search(rf"^%global {name} (.+)$", SPEC_TEXT, re.MULTILINE)
    assert found, name
    return found[1]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize(("wheel", "runs"), [
    ("flask-3.1.3-py3-none-any.whl", True),
    ("tzdata-2026.6-py2.py3-none-any.whl", True),
    ("confluent_kafka-2.16.1-cp311-cp311-manylinux_2_28_x86_64.whl", True),
    ("fastavro-1.13.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("x-1.0-cp311-cp311-manylinux1_x86_64.whl", True),
    ("x-1.0-cp311-cp311-manylinux_2_34_x86_64.whl", True),
    ("x-1.0-cp311-cp311-manylinux_2_35_x86_64.whl", False),
    ("x-1.0-cp311-cp311-manylinux_2_39_x86_64.musllinux_1_2_x86_64.whl", False),
    ("x-1.0-cp311-cp311-linux_x86_64.whl", False),
    ("x-1.0-1-cp311-cp311-macosx_11_0_arm64.whl", False),
])
def test_a_wheel_goes_into_the_rpm_only_if_it_runs_on_el9s_glibc(wheel: str, runs: bool) -> None:
    assert runs_on_el9(wheel) is runs


def test_the_spec_packages_the_projects_version_scripts_units_and_configurations() -> None:
    assert re.search(rf"^Version: +{re.escape(project_version())}$", SPEC_TEXT, re.MULTILINE)
    assert spec_global("python3_venv") == str(RPM_PYTHON)
    assert spec_global("venv") == "/opt/sarchive"
    assert sorted(spec_global("console_scripts").split()) == sorted(SCRIPTS)
    assert sorted(spec_global("units").split()) == [unit.name for unit in UNITS]
    configs = re.search(r"^for service in (.+); do$", SPEC_TEXT, re.MULTILINE)
    assert configs
    assert sorted(configs[1].split()) == sorted(
        path.name.removesuffix(".example.toml") for path in DEPLOY.glob("*.example.toml"))
    for name in [*SCRIPTS, *(unit.name for unit in UNITS)]:
        assert f"%{{_bindir}}/{name}\n" in SPEC_TEXT or f"%{{_unitdir}}/{name}\n" in SPEC_TEXT


def test_there_is_a_unit_for_every_service() -> None:
    assert {unit.name.removesuffix(".service") for unit in UNITS} == set(CONFIG_TYPES)


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_every_unit_runs_its_script_from_the_environment_with_a_valid_example_config(
        unit: Path) -> None:
    settings = unit_settings(unit)
    script = unit.name.removesuffix(".service")
    assert settings["ExecStart"] == [f"/opt/sarchive/bin/{script}"]
    assert script in SCRIPTS
    assert settings["RestartPreventExitStatus"] == ["2"]  # a bad configuration is not retried
    assert settings["ProtectSystem"] == ["strict"]
    config_path = settings["Environment"][0].removeprefix("SARCHIVE_CONFIG=")
    name = re.fullmatch(r"/etc/sarchive/(\w+)\.toml", config_path)
    assert name, config_path
    example = DEPLOY / f"{name[1]}.example.toml"
    load_config(CONFIG_TYPES[script], ["--config", str(example)], prog=script, description="",
                environ={})
    # The producer reads the 0700 spool as root; the other services run as sarchive.
    assert settings.get("User") == (["root"] if script == "sarchive-producer" else ["sarchive"])


KAFKA_SERVICES = ("sarchive-producer", "sarchive-archive", "sarchive-es")
OPERATIONS = (REPO / "docs" / "operations.md").read_text()


def unit_example_config(script: str) -> Any:
    """The example configuration the script's unit reads, loaded as the service would."""
    settings = unit_settings(DEPLOY / f"{script}.service")
    name = Path(settings["Environment"][0].removeprefix("SARCHIVE_CONFIG=")).stem
    return load_config(CONFIG_TYPES[script], ["--config", str(DEPLOY / f"{name}.example.toml")],
                       prog=script, description="", environ={})


@pytest.mark.parametrize("script", KAFKA_SERVICES)
def test_every_kafka_services_unit_connects_secured_as_a_principal_operations_md_grants(
        script: str) -> None:
    """SASL_SSL with SCRAM-SHA-512, the brokers' CA, the password in a file (never in the
    configuration), a principal of its own that the unit names and docs/operations.md's
    kafka-acls commands grant (a consumer's on its own group)."""
    config = unit_example_config(script)
    assert (config.security_protocol, config.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert config.ssl_ca is not None and config.sasl_password_file is not None
    assert config.sasl_password is None
    assert f"principal {config.sasl_username}," in (DEPLOY / f"{script}.service").read_text()
    assert f"--allow-principal User:{config.sasl_username} " in OPERATIONS
    if script != "sarchive-producer":
        assert (f"--allow-principal User:{config.sasl_username} --operation Read --group"
                f" {config.group}\n") in OPERATIONS


def test_each_kafka_service_has_a_principal_of_its_own() -> None:
    principals = {unit_example_config(script).sasl_username for script in KAFKA_SERVICES}
    assert len(principals) == len(KAFKA_SERVICES)


def test_the_archive_consumers_example_root_is_its_units_state_directory() -> None:
    settings = unit_settings(DEPLOY / "sarchive-archive.service")
    config = load_config(ArchiveConfig, ["--config", str(DEPLOY / "archive.example.toml")],
                         prog="sarchive-archive", description="", environ={})
    assert config.archive == Path("/var/lib") / settings["StateDirectory"][0]
