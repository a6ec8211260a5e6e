"""`make dist` and `make rpm`: sarchive's sdist and wheel, and its EL9 RPM.

Usage: python3 -m infra.packages dist|rpm [--out DIR] [--work DIR]

- `dist` builds the sdist and the wheel with PyPA's `build` (from the sdist, so the sdist is
  proven complete), in a private tools environment under the work directory: the shared
  development environment is never touched.
- `rpm` builds them, then a wheelhouse of every dependency for the RPM's Python (EL9's
  python3.11, Debian 12's python3 alike) whose wheels run on EL9's glibc, and runs rpmbuild on
  deploy/rpm/sarchive.spec with the sdist and the wheelhouse as its sources: rpmbuild itself
  needs no network. On Debian, rpmbuild comes from Debian's `rpm` package (installed when
  missing); Debian's rpm database knows no EL9 package, so BuildRequires are not checked there.

Standard library only, like the rest of infra/: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

from infra.apt import apt_install
from infra.service import ServiceError, repo_root

# The RPM's interpreter: AppStream's python3.11 on EL9 (Requires: python3.11), the same path
# on Debian 12. The spec's %python3_venv names it too.
RPM_PYTHON = Path("/usr/bin/python3.11")
# EL9's glibc: a dependency's wheel must be tagged manylinux for this glibc or an older one.
EL9_GLIBC = (2, 34)
# The legacy manylinux tags and the glibc each stands for (PEP 600).
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_BUILD_TOOL = "build>=1.2,<2"
SPEC = repo_root() / "deploy" / "rpm" / "sarchive.spec"


class PackagingError(Exception):
    """A package could not be built; the message says which step and why."""


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class RpmBuild:
    dist: Distributions
    wheelhouse: Path  # the dependencies' wheels the RPM was built from
    rpm: Path


def project_version() -> str:
    with (repo_root() / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def _build_requires() -> list[str]:
    with (repo_root() / "pyproject.toml").open("rb") as handle:
        return [str(r) for r in tomllib.load(handle)["build-system"]["requires"]]


def outside_checkout_environment() -> dict[str, str]:
    """This process's environment without what points Python at a checkout or another
    environment: with the repository on PYTHONPATH, pip would take its sarchive.egg-info for
    sarchive installed, and an installed script would import the checkout's modules."""
    return {key: value for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}}


def _run(command: list[str], step: str) -> None:
    print(f"+ {' '.join(command)}", flush=True)
    result = subprocess.run(command, env=outside_checkout_environment(), check=False)
    if result.returncode != 0:
        raise PackagingError(f"{step} failed (exit code {result.returncode}): "
                             f"{' '.join(command)}")


def tools_python(work: Path) -> Path:
    """The private environment holding PyPA's `build` (and a pip new enough for --python)."""
    tools = work / "tools"
    python = tools / "bin" / "python"
    if not (tools / ".ready").exists():
        venv.EnvBuilder(clear=True, with_pip=True).create(tools)
        _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--upgrade", "pip", _BUILD_TOOL], "installing the packaging tools")
        (tools / ".ready").touch()
    return python


def build_dist(out: Path, work: Path) -> Distributions:
    """The sdist, and the wheel built from it, into out."""
    out.mkdir(parents=True, exist_ok=True)
    version = project_version()
    sdist = out / f"sarchive-{version}.tar.gz"
    wheel = out / f"sarchive-{version}-py3-none-any.whl"
    for stale in (sdist, wheel):
        stale.unlink(missing_ok=True)
    _run([str(tools_python(work)), "-m", "build", "--outdir", str(out), str(repo_root())],
         "building the sdist and the wheel")
    for built in (sdist, wheel):
        if not built.is_file():
            raise PackagingError(f"`build` made no {built.name} in {out}")
    return Distributions(sdist, wheel)


def wheel_platforms(filename: str) -> list[str]:
    """The platform tags of a wheel's file name (PEP 427: name-version[-build]-py-abi-plat)."""
    return filename.removesuffix(".whl").split("-")[-1].split(".")


def runs_on_el9(filename: str) -> bool:
    """Whether a wheel runs on EL9's glibc: pure, or manylinux for glibc 2.34 or older."""
    for tag in wheel_platforms(filename):
        if tag == "any":
            return True
        pep600 = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag)
        glibc = ((int(pep600[1]), int(pep600[2])) if pep600
                 else _LEGACY_MANYLINUX.get(tag.split("_", 1)[0]))
        if glibc is not None and glibc <= EL9_GLIBC:
            return True
    return False


def build_wheelhouse(wheel: Path, wheelhouse: Path, work: Path) -> None:
    """Every wheel the RPM's environment needs, resolved for RPM_PYTHON: the dependencies of
    the wheel, pip (which installs them at rpmbuild time) and the build-system requirements
    (which build sarchive's own wheel from the sdist). sarchive's wheel is not among them."""
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    if not RPM_PYTHON.exists():
        raise PackagingError(f"{RPM_PYTHON} is missing: the RPM's environment is built with it")
    # pip --python resolves for that interpreter (CPython 3.11 wheels); --prefer-binary takes a
    # project's wheel over a newer sdist; a pure-Python sdist (inotify_simple) becomes a wheel.
    _run([str(tools_python(work)), "-m", "pip", "--python", str(RPM_PYTHON), "wheel", "-q",
          "--disable-pip-version-check", "--prefer-binary", "--wheel-dir", str(wheelhouse),
          str(wheel), "pip", *_build_requires()], "building the wheelhouse")
    (wheelhouse / wheel.name).unlink()
    foreign = sorted(p.name for p in wheelhouse.glob("*.whl") if not runs_on_el9(p.name))
    if foreign:
        raise PackagingError(f"wheels that need a newer glibc than EL9's "
                             f"{'.'.join(map(str, EL9_GLIBC))}: {', '.join(foreign)}")


def _rpmbuild() -> str:
    found = shutil.which("rpmbuild")
    if found:
        return found
    try:
        apt_install(["rpm"])  # Debian's rpm tools: rpmbuild, rpm2cpio
    except ServiceError as exc:
        raise PackagingError(f"rpmbuild is missing and could not be installed: {exc}") from exc
    found = shutil.which("rpmbuild")
    if not found:
        raise PackagingError("rpmbuild is missing (Debian: apt-get install rpm;"
                             " EL9: dnf install rpm-build)")
    return found


def build_rpm(dist: Distributions, out: Path, work: Path) -> RpmBuild:
    """The RPM from the sdist and the wheel of `dist`, into out; the wheelhouse under work."""
    rpmbuild = _rpmbuild()
    version = project_version()
    sources = work / "rpm" / "SOURCES"
    if sources.parent.exists():
        shutil.rmtree(sources.parent)
    sources.mkdir(parents=True)
    wheelhouse = work / "wheelhouse"
    build_wheelhouse(dist.wheel, wheelhouse, work)
    shutil.copy2(dist.sdist, sources / dist.sdist.name)
    with tarfile.open(sources / f"sarchive-{version}-wheelhouse.tar", "w") as archive:
        for wheel in sorted(wheelhouse.glob("*.whl")):
            archive.add(wheel, arcname=wheel.name)
    command = [rpmbuild, "-bb", "--define", f"_topdir {sources.parent}",
               "--define", f"_sourcedir {sources}", "--define", "dist .el9"]
    if Path("/var/lib/dpkg/status").exists():
        command.append("--nodeps")  # Debian's rpm database holds no EL9 package
    _run([*command, str(SPEC)], "rpmbuild")
    built = sorted((sources.parent / "RPMS").glob(f"*/sarchive-{version}-*.rpm"))
    if len(built) != 1:
        raise PackagingError(f"rpmbuild made {len(built)} packages, not one: {built}")
    rpm = out / built[0].name
    shutil.copy2(built[0], rpm)
    return RpmBuild(dist, wheelhouse, rpm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m infra.packages", description=__doc__)
    parser.add_argument("what", choices=("dist", "rpm"))
    parser.add_argument("--out", type=Path, default=repo_root() / "dist",
                        help="where the packages go (default: dist/)")
    parser.add_argument("--work", type=Path, default=repo_root() / "build" / "packages",
                        help="the tools environment, wheelhouse and rpmbuild tree"
                        " (default: build/packages/)")
    args = parser.parse_args(argv)
    out, work = args.out.resolve(), args.work.resolve()
    try:
        dist = build_dist(out, work)
        made = [dist.sdist, dist.wheel]
        if args.what == "rpm":
            made.append(build_rpm(dist, out, work).rpm)
    except PackagingError as exc:
        print(f"{parser.prog} {args.what}: {exc}", file=sys.stderr)
        return 1
    for path in made:
        print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
