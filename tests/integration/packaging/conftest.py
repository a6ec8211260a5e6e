"""The packages, built once per session as `make dist` and `make rpm` build them
(infra/packages.py), into a temporary directory: the sdist and wheel, the wheelhouse of the
dependencies, the RPM and its payload extracted (rpm2archive, from the same Debian package as
rpmbuild). About a minute on the 2-core reference machine; it needs PyPI.

Fixtures:
    dist        (session)  Distributions: .sdist, .wheel
    rpm_build   (session)  RpmBuild: .dist, .wheelhouse, .rpm
    payload     (session)  the RPM's files extracted under a directory (payload / "opt/...")
    rpm_query   (session)  `rpm -qp ARGS RPM`'s output
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.packages import Distributions, PackagingError, RpmBuild, build_dist, build_rpm


@pytest.fixture(scope="session")
def packages_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packages")


@pytest.fixture(scope="session")
def dist(packages_work: Path) -> Distributions:
    try:
        return build_dist(packages_work / "dist", packages_work / "work")
    except PackagingError as exc:
        pytest.fail(f"make dist failed: {exc}")


@pytest.fixture(scope="session")
def rpm_build(dist: Distributions, packages_work: Path) -> RpmBuild:
    try:
        return build_rpm(dist, packages_work / "dist", packages_work / "work")
    except PackagingError as exc:
        pytest.fail(f"make rpm failed: {exc}")


@pytest.fixture(scope="session")
def payload(rpm_build: RpmBuild, packages_work: Path) -> Path:
    archive = packages_work / "payload.rpm"
    archive.write_bytes(rpm_build.rpm.read_bytes())
    subprocess.run(["rpm2archive", "--nocompression", str(archive)], check=True)
    root = packages_work / "payload"
    with tarfile.open(f"{archive}.tar") as tar:
        tar.extractall(root, filter="tar")
    return root


@pytest.fixture(scope="session")
def rpm_query(rpm_build: RpmBuild) -> Callable[..., str]:
    def query(*args: str) -> str:
        return subprocess.run(["rpm", "-qp", *args, str(rpm_build.rpm)], check=True,
                              capture_output=True, text=True).stdout
    return query
