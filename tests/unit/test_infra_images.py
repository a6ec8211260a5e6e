"""infra/images.py: the containers.conf it writes keeps every container within the machine's
hard limits, on runc, and the images it builds are those docker-compose.yml runs."""

from __future__ import annotations

import resource
import tomllib
from pathlib import Path

import yaml

from infra.images import IMAGES, MAX_NPROC, containers_conf

REPO = Path(__file__).resolve().parents[2]


def test_container_ulimits_never_exceed_the_hard_limits() -> None:
    """Podman's defaults above them fail every start with setrlimit EPERM."""
    conf = tomllib.loads(containers_conf(20000, 4096))
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=4096:4096"]


def test_nproc_is_capped_without_a_hard_limit() -> None:
    conf = tomllib.loads(containers_conf(resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    nofile, nproc = conf["containers"]["default_ulimits"]
    assert nproc == f"nproc={MAX_NPROC}:{MAX_NPROC}"
    assert nofile.startswith("nofile=")


def test_containers_run_on_runc_without_systemd() -> None:
    engine = tomllib.loads(containers_conf(20000, 4096))["engine"]
    assert engine == {"runtime": "runc", "cgroup_manager": "cgroupfs", "events_logger": "file"}


def test_every_image_the_compose_file_runs_is_built_from_its_dockerfile() -> None:
    """`make images` builds what compose runs: the same tag, from the service's Dockerfile."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    built = {image.tag.removeprefix("localhost/"): image.dockerfile for image in IMAGES}
    for name, service in services.items():
        assert built[service["image"]] == service["build"]["dockerfile"], name
