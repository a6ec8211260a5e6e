"""docker-compose.yml is structurally sound: every command is one of our console scripts,
every image or build context exists, and every sarchive service has a metrics port and a
healthcheck. No Docker engine runs here, so the file is checked, not run."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
OURS = sorted(name for name, svc in SERVICES.items() if "build" in svc)


def test_compose_runs_the_producer_both_consumers_and_the_web_pages() -> None:
    commands = {SERVICES[name]["command"][0] for name in OURS}
    assert commands == {"sarchive-producer", "sarchive-archive", "sarchive-es", "sarchive-web"}


@pytest.mark.parametrize("name", OURS)
def test_every_sarchive_command_is_an_installed_console_script(name: str) -> None:
    assert SERVICES[name]["command"][0] in SCRIPTS


@pytest.mark.parametrize("name", OURS)
def test_every_build_context_and_dockerfile_exists(name: str) -> None:
    build = SERVICES[name]["build"]
    context = REPO / build["context"]
    assert (context / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_build_and_a_healthcheck(name: str) -> None:
    service = SERVICES[name]
    assert "image" in service or "build" in service
    assert service["healthcheck"]["test"]


@pytest.mark.parametrize("name", OURS)
def test_every_sarchive_service_exposes_its_metrics_port(name: str) -> None:
    service = SERVICES[name]
    port = service["environment"]["SARCHIVE_METRICS_PORT"]
    assert any(mapping.endswith(f":{port}") for mapping in service["ports"])


def test_dockerfile_runs_as_a_non_root_user() -> None:
    lines = (REPO / "deploy" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


# The one documented set of metrics ports (docs/operations.md, README).
METRICS_PORTS = {"sarchive-producer": 9310, "sarchive-archive": 9311, "sarchive-es": 9312,
                 "sarchive-web": 9313}
WEB_PORT = 8080


@pytest.mark.parametrize("name", OURS)
def test_every_service_serves_metrics_on_its_documented_port(name: str) -> None:
    service = SERVICES[name]
    port = METRICS_PORTS[service["command"][0]]
    assert service["environment"]["SARCHIVE_METRICS_PORT"] == str(port)
    assert f"{port}:{port}" in service["ports"]


def test_the_image_exposes_and_the_examples_use_the_documented_ports() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    exposed = {int(port) for line in dockerfile.splitlines() if line.startswith("EXPOSE ")
               for port in line.split()[1:]}
    assert exposed == {*METRICS_PORTS.values(), WEB_PORT}
    example = tomllib.loads((REPO / "deploy" / "producer.example.toml").read_text())
    assert example["metrics-port"] == METRICS_PORTS["sarchive-producer"]
    readme = (REPO / "README.md").read_text()
    for port in METRICS_PORTS.values():
        assert f"--metrics-port {port}" in readme


def test_the_image_copies_every_package_the_wheel_ships() -> None:
    """A package missing from the build context builds a wheel that fails at import."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {name for name in find if "*" not in name}
    copied = {line.split()[1] for line in (REPO / "deploy" / "Dockerfile").read_text()
              .splitlines() if line.startswith("COPY ") and "--from" not in line}
    assert packages <= copied
