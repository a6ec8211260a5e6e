"""docker-compose.yml is structurally sound: every command is one of our console scripts,
every image is built here (no registry image), every build context exists, every sarchive
service has a metrics port and a healthcheck, and every volume is where its image keeps its
data. tests/integration/test_compose_stack.py runs the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.config import load_config
from tests.unit.test_packaging import CONFIG_TYPES  # each console script's settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
OURS = sorted(name for name, svc in SERVICES.items()
              if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile")
BUILT = sorted(name for name, svc in SERVICES.items() if "build" in svc)
# "${SARCHIVE_COMPOSE_..._PORT:-9310}:9310": a host port that moves, its default, the container's.
PORT_MAPPING = re.compile(r"^(?:127\.0\.0\.1:)?\$\{SARCHIVE_COMPOSE_[A-Z_]+_PORT:-(\d+)\}:(\d+)$")


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(default host port, container port) of every mapping; a mapping of another form fails."""
    pairs = set()
    for mapping in service.get("ports", []):
        match = PORT_MAPPING.match(mapping)
        assert match, f"{mapping}: host ports are SARCHIVE_COMPOSE_*_PORT with a default"
        pairs.add((int(match[1]), int(match[2])))
    return pairs


def test_compose_runs_the_producer_both_consumers_and_the_web_pages() -> None:
    commands = {SERVICES[name]["command"][0] for name in OURS}
    assert commands == {"sarchive-producer", "sarchive-archive", "sarchive-es", "sarchive-web"}


@pytest.mark.parametrize("name", OURS)
def test_every_sarchive_command_is_an_installed_console_script(name: str) -> None:
    assert SERVICES[name]["command"][0] in SCRIPTS


@pytest.mark.parametrize("name", BUILT)
def test_every_build_context_and_dockerfile_exists(name: str) -> None:
    build = SERVICES[name]["build"]
    context = REPO / build["context"]
    assert (context / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_built_here_and_has_a_healthcheck(name: str) -> None:
    """No registry image: every image is built from this repository (on a base image)."""
    service = SERVICES[name]
    assert "build" in service and "/" not in service["image"]
    assert service["healthcheck"]["test"]


@pytest.mark.parametrize("name", OURS)
def test_every_sarchive_service_exposes_its_metrics_port(name: str) -> None:
    service = SERVICES[name]
    port = int(service["environment"]["SARCHIVE_METRICS_PORT"])
    assert port in {container for _, container in published(service)}


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
    assert (port, port) in published(service)


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


def test_every_volume_is_where_its_image_keeps_its_data() -> None:
    """A volume mounted anywhere else is never written (the broker's log in /tmp)."""
    kafka = (REPO / "deploy" / "kafka" / "server.properties").read_text().splitlines()
    assert "log.dirs=/var/lib/kafka/data" in kafka
    assert "kafka-data:/var/lib/kafka/data" in SERVICES["kafka"]["volumes"]
    es = (REPO / "deploy" / "elasticsearch" / "Dockerfile").read_text()
    assert "SARCHIVE_ES_BASE=/var/lib/elasticsearch " in es  # the launcher's data: BASE/data
    assert "es-data:/var/lib/elasticsearch/data" in SERVICES["elasticsearch"]["volumes"]


def test_the_producer_state_volume_starts_writable_by_the_image_user() -> None:
    """A fresh named volume is a copy of the image's directory: /state must be uid 10001's."""
    assert "producer-state:/state" in SERVICES["producer"]["volumes"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "install -d -o sarchive -g sarchive -m 0700 /state" in dockerfile
    assert "--uid 10001" in dockerfile


@pytest.mark.parametrize("dockerfile", ["deploy/Dockerfile", "deploy/kafka/Dockerfile",
                                        "deploy/elasticsearch/Dockerfile"])
def test_every_dockerfile_takes_its_base_image_as_a_build_argument(dockerfile: str) -> None:
    """Users build on a registry's image by default; `make images` on a local base."""
    lines = (REPO / dockerfile).read_text().splitlines()
    arguments = {line.split()[1].split("=")[0] for line in lines if line.startswith("ARG ")}
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(base.startswith("${") and base[2:-1] in arguments for base in bases)


# docker-compose.secure-kafka.yml: the Kafka services of docker-compose.yml against a secured
# site broker, each as the principal of its example configuration in deploy/.
SECURE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.secure-kafka.yml").read_text())
KAFKA_SERVICES = {"producer": ("sarchive-producer", "producer"),
                  "archive": ("sarchive-archive", "archive"), "elastic": ("sarchive-es", "es")}
COMPOSE_VARIABLE = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def with_defaults(value: str) -> str:
    """A compose value with every ${VARIABLE:-default} at its default, as compose runs it
    when the variable is unset."""
    return COMPOSE_VARIABLE.sub(lambda match: match[1], value)


def test_the_secured_override_covers_every_service_that_talks_to_kafka() -> None:
    talks_to_kafka = {name for name in OURS if "SARCHIVE_BROKERS" in SERVICES[name]["environment"]}
    assert set(SECURE["services"]) == talks_to_kafka == set(KAFKA_SERVICES)


@pytest.mark.parametrize("name", sorted(KAFKA_SERVICES))
def test_with_the_secured_override_a_service_connects_over_sasl_ssl_as_its_own_principal(
        name: str) -> None:
    """Merged as compose merges an override (environment by key, secrets added), the
    service's settings load: SASL_SSL/SCRAM-SHA-512 with the CA and its own password as
    secrets, as the principal its deploy/ example configuration names."""
    script, example = KAFKA_SERVICES[name]
    override = SECURE["services"][name]
    environment = {key: with_defaults(value) for key, value in
                   {**SERVICES[name]["environment"], **override["environment"]}.items()}
    config = load_config(CONFIG_TYPES[script],
                         [with_defaults(arg) for arg in SERVICES[name]["command"][1:]],
                         prog=script, description="", environ=environment)
    assert (config.security_protocol, config.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    mounted = {f"/run/secrets/{s}" if isinstance(s, str) else f"/run/secrets/{s['target']}"
               for s in override["secrets"]}
    assert {str(config.ssl_ca), str(config.sasl_password_file)} <= mounted
    sources = {s if isinstance(s, str) else s["source"] for s in override["secrets"]}
    assert sources <= set(SECURE["secrets"])
    site = tomllib.loads((REPO / "deploy" / f"{example}.example.toml").read_text())
    assert config.sasl_username == site["sasl-username"]
