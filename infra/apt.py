"""Debian packages a service needs: installed with apt-get when missing."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from infra.service import ServiceError

_apt_updated = False


def dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def apt_install(packages: Sequence[str]) -> None:
    """Install the Debian packages that are missing; apt-get update at most once per run."""
    global _apt_updated  # noqa: PLW0603 - one update per process is the point
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServiceError(
            f"missing Debian packages {missing}; run `infra/services install` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    try:
        with _no_service_autostart():
            if not _apt_updated:
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
                _apt_updated = True
            subprocess.run(
                # Others may be installing on the same machine: wait for dpkg's lock.
                ["apt-get", "install", "-o", "DPkg::Lock::Timeout=300", "-y", "-q",
                 "--no-install-recommends", *missing],
                check=True,
                env=env,
            )
    except subprocess.CalledProcessError as error:
        raise ServiceError(
            f"`{' '.join(error.cmd)}` failed with exit code {error.returncode}"
        ) from error


def debconf_preseed(selections: Sequence[str]) -> None:
    """Answer a package's debconf questions before it is installed ("<owner> <question> <type>
    <value>" lines), so its maintainer scripts run unattended."""
    if os.geteuid() != 0:
        raise ServiceError("debconf answers need root; run `infra/services install` as root")
    try:
        subprocess.run(["debconf-set-selections"], input="".join(f"{s}\n" for s in selections),
                       text=True, check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        raise ServiceError(f"debconf-set-selections failed: {error.stderr.strip()}") from error


@contextlib.contextmanager
def _no_service_autostart() -> Iterator[None]:
    """Keep Debian maintainer scripts from starting the system slurmctld/slurmd/munged.

    We run our own daemons from the run dir; the packaged ones would start without a
    slurm.conf, fail, and make `apt-get install` fail with them. policy-rc.d exit code 101
    means "action forbidden". Container images often ship one already; then leave it alone.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# temporary, written by sarchive infra/apt.py\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)
