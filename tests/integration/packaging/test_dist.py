"""`make dist`: the wheel holds every package of the project with its data files and nothing
of the development tree, the sdist is the source release the RPM is built from, and the wheel
installed into a fresh virtual environment (offline, from the RPM's wheelhouse) gives working
console scripts and the codec."""

from __future__ import annotations

import subprocess
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from infra.packages import (
    RPM_PYTHON,
    Distributions,
    RpmBuild,
    outside_checkout_environment,
    project_version,
)
from schemas.codec import JobEventCodec
from testkit.events import job_event

# Installed code runs as on a site: not the checkout's modules from PYTHONPATH.
ENV = outside_checkout_environment()
REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
PACKAGES = ("producer", "consumers", "schemas", "runtime", "query", "web")
DEVELOPMENT = ("tests", "infra", "bench", "testkit")


def shipped_sources() -> set[str]:
    """Every file of the project's packages a wheel must hold: modules, Avro schemas,
    templates, style sheets, py.typed markers."""
    return {str(path.relative_to(REPO)) for package in PACKAGES
            for path in (REPO / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def test_the_wheel_holds_every_package_with_its_data_and_no_development_code(
        dist: Distributions) -> None:
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    dist_info = f"sarchive-{project_version()}.dist-info/"
    ours = {name for name in names if not name.startswith(dist_info)}
    assert ours == shipped_sources()
    assert {name.split("/")[0] for name in names} == {*PACKAGES, dist_info.rstrip("/")}
    assert "schemas/avsc/job_event.v1.avsc" in ours
    assert "web/templates/job.html" in ours
    assert not any(name.startswith(f"{top}/") for name in names for top in DEVELOPMENT)


def requirements(lines: list[str]) -> set[tuple[str, SpecifierSet]]:
    """The run-time requirements (those of the `dev` extra carry a marker)."""
    return {(canonicalize_name(r.name), r.specifier) for r in map(Requirement, lines)
            if r.marker is None}


def test_the_wheel_declares_the_projects_scripts_and_dependencies(dist: Distributions) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        info = f"sarchive-{project_version()}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert metadata["Version"] == PYPROJECT["project"]["version"]
    assert metadata["Requires-Python"] == ">=3.11"
    assert requirements(metadata.get_all("Requires-Dist") or []) == requirements(
        PYPROJECT["project"]["dependencies"])
    for script, target in PYPROJECT["project"]["scripts"].items():
        assert f"{script} = {target}" in entry_points


def test_the_sdist_holds_the_sources_units_configurations_spec_and_docs(
        dist: Distributions) -> None:
    top = f"sarchive-{project_version()}/"
    with tarfile.open(dist.sdist) as sdist:
        names = {name.removeprefix(top) for name in sdist.getnames()}
    deploy = {str(p.relative_to(REPO)) for p in (REPO / "deploy").rglob("*") if p.is_file()}
    docs = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    assert shipped_sources() | deploy | docs | {"README.md", "pyproject.toml"} <= names
    assert not any(name.startswith(f"{top_dir}/") for name in names for top_dir in DEVELOPMENT)


@pytest.fixture(scope="module")
def wheel_venv(rpm_build: RpmBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment of the RPM's Python with the wheel installed as
    docs/install.md says, offline from the wheelhouse."""
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([str(RPM_PYTHON), "-m", "venv", str(venv)], check=True, env=ENV)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "--no-index", "--find-links", str(rpm_build.wheelhouse),
                    str(rpm_build.dist.wheel)], check=True, env=ENV)
    return venv


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_of_the_installed_wheel_answers_help_and_version(
        wheel_venv: Path, script: str) -> None:
    command = wheel_venv / "bin" / script
    helped = subprocess.run([str(command), "--help"], capture_output=True, text=True,
                            check=False, env=ENV)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: {script} ")
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True,
                             check=False, env=ENV)
    assert (version.returncode, version.stdout) == (0, f"{script} {project_version()}\n")


def test_the_installed_wheels_codec_decodes_an_event_and_finds_its_templates(
        wheel_venv: Path, tmp_path: Path) -> None:
    event = job_event(job_id="4711")
    decoded = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c",
         "import sys; from importlib.resources import files; from schemas import JobEventCodec;"
         " event = JobEventCodec().decode(sys.stdin.buffer.read());"
         " print(event.job_key, files('web').joinpath('templates/job.html').is_file(),"
         " files('schemas').is_relative_to(sys.prefix))"],
        input=JobEventCodec().encode(event), capture_output=True, check=False, env=ENV,
        cwd=tmp_path)  # python -c puts its working directory on sys.path: not the checkout
    assert decoded.returncode == 0, decoded.stderr.decode()
    assert decoded.stdout.decode().split() == [event.job_key, "True", "True"]
