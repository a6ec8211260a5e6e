"""`make rpm`: the EL9 package, inspected with rpm and run from its extracted payload: its
header and dependencies, its file list and attributes, its scriptlets (run against stand-ins
for systemctl and the user tools), its units, and the console scripts of the virtual
environment in /opt/sarchive, relocated from the buildroot."""

from __future__ import annotations

import marshal
import os
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.apt import apt_install
from infra.packages import RPM_PYTHON, RpmBuild, outside_checkout_environment, project_version
from schemas.codec import JobEventCodec
from testkit.events import job_event
from testkit.processes import ServiceProcess

# Installed code runs as on a site: not the checkout's modules from PYTHONPATH.
ENV = outside_checkout_environment()
REPO = Path(__file__).resolve().parents[3]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
UNITS = sorted(path.name for path in (REPO / "deploy").glob("*.service"))
VENV = "/opt/sarchive"
SITE_PACKAGES = f"{VENV}/lib/python3.11/site-packages"
CONFIGS = ("producer", "archive", "es", "web")
Query = Callable[..., str]


def test_the_header_names_the_project_version_for_el9(rpm_query: Query) -> None:
    header = rpm_query("--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}")
    assert header == f"sarchive {project_version()} 1.el9 x86_64 Apache-2.0"


def test_it_requires_python311_and_the_scriptlets_tools_and_provides_nothing_bundled(
        rpm_query: Query) -> None:
    requires = {line for line in rpm_query("--requires").splitlines()
                if not line.startswith("rpmlib(")}
    assert requires == {"python3.11", "shadow-utils", "systemd", "/bin/sh",
                        f"config(sarchive) = {project_version()}-1.el9"}
    # No python3.11dist(flask), no librdkafka: the environment's contents are its own.
    assert set(rpm_query("--provides").splitlines()) == {
        f"{name} = {project_version()}-1.el9"
        for name in ("sarchive", "sarchive(x86-64)", "config(sarchive)")}


def test_the_file_list_holds_the_environment_scripts_units_user_configs_and_docs(
        rpm_query: Query) -> None:
    files = {}
    for line in rpm_query("--qf", "[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILEUSERNAME}:"
                          "%{FILEGROUPNAME}|%{FILENAMES}\n]").splitlines():
        flags, mode, owner, name = line.split("|")
        files[name] = (flags, mode, owner)
    for script in SCRIPTS:
        assert files[f"{VENV}/bin/{script}"] == ("", "-rwxr-xr-x", "root:root")
        assert files[f"/usr/bin/{script}"][1].startswith("l")
    for package in ("producer", "consumers", "schemas", "runtime", "query", "web"):
        assert f"{SITE_PACKAGES}/{package}/__init__.py" in files
    assert f"{SITE_PACKAGES}/schemas/avsc/job_event.v1.avsc" in files
    assert f"{SITE_PACKAGES}/web/templates/job.html" in files
    assert f"{SITE_PACKAGES}/confluent_kafka/__init__.py" in files
    for unit in UNITS:
        assert files[f"/usr/lib/systemd/system/{unit}"] == ("", "-rw-r--r--", "root:root")
    assert files["/usr/lib/sysusers.d/sarchive.conf"][1] == "-rw-r--r--"
    assert files["/etc/sarchive"] == ("", "drwxr-x---", "root:sarchive")
    for config in CONFIGS:
        # c: %config, n: noreplace (a site's edits survive upgrades)
        assert files[f"/etc/sarchive/{config}.toml"] == ("cn", "-rw-r-----", "root:sarchive")
    assert files["/usr/share/doc/sarchive/producer.md"][0] == "d"
    assert "/usr/share/sarchive/prometheus/alerts.yml" in files
    assert "/usr/share/sarchive/grafana/sarchive-dashboard.json" in files
    assert not any(name.startswith("/usr/lib/.build-id") for name in files)
    assert not any(f"{SITE_PACKAGES}/{top}/" in name
                   for name in files for top in ("tests", "infra", "bench", "testkit"))


@pytest.fixture
def stand_ins(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """systemctl, getent, groupadd and useradd that log their arguments; getent finds
    nothing unless $GETENT_FINDS is set."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("systemctl", "groupadd", "useradd"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
    (bin_dir / "getent").write_text(f'#!/bin/sh\necho "getent $*" >> {log}\n'
                                    '[ -n "$GETENT_FINDS" ]\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}, log


def run_scriptlet(rpm_query: Query, tag: str, arg: int, env: dict[str, str],
                  log: Path) -> list[str]:
    log.unlink(missing_ok=True)
    script = rpm_query("--qf", f"%{{{tag}}}")
    subprocess.run(["/bin/sh", "-c", script, "scriptlet", str(arg)], env=env, check=True)
    return log.read_text().splitlines() if log.exists() else []


def test_pre_creates_the_sarchive_group_and_system_user_only_when_missing(
        rpm_query: Query, stand_ins: tuple[dict[str, str], Path]) -> None:
    env, log = stand_ins
    assert run_scriptlet(rpm_query, "PREIN", 1, env, log) == [
        "getent group sarchive", "groupadd -r sarchive", "getent passwd sarchive",
        "useradd -r -g sarchive -d /var/lib/sarchive -s /sbin/nologin -c sarchive services"
        " sarchive"]
    assert run_scriptlet(rpm_query, "PREIN", 2, {**env, "GETENT_FINDS": "1"}, log) == [
        "getent group sarchive", "getent passwd sarchive"]
    # The same user as the sysusers.d file the package ships.
    sysusers = (REPO / "deploy" / "sarchive.sysusers.conf").read_text()
    assert 'u sarchive - "sarchive services" /var/lib/sarchive /sbin/nologin' in sysusers


def test_units_are_preset_on_install_disabled_on_removal_and_restarted_on_upgrade(
        rpm_query: Query, stand_ins: tuple[dict[str, str], Path]) -> None:
    env, log = stand_ins
    units = rpm_query("--qf", "%{POSTIN}").split("preset ")[1].split(" >")[0]
    assert sorted(units.split()) == UNITS
    assert run_scriptlet(rpm_query, "POSTIN", 1, env, log) == [
        f"systemctl --no-reload preset {units}"]
    assert run_scriptlet(rpm_query, "POSTIN", 2, env, log) == []
    assert run_scriptlet(rpm_query, "PREUN", 0, env, log) == [
        f"systemctl --no-reload disable --now {units}"]
    assert run_scriptlet(rpm_query, "PREUN", 1, env, log) == []
    assert run_scriptlet(rpm_query, "POSTUN", 1, env, log) == [f"systemctl try-restart {units}"]
    assert run_scriptlet(rpm_query, "POSTUN", 0, env, log) == []


def test_the_packaged_units_and_configurations_are_the_repositorys(payload: Path) -> None:
    for unit in UNITS:
        packaged = payload / "usr/lib/systemd/system" / unit
        assert packaged.read_bytes() == (REPO / "deploy" / unit).read_bytes()
    for config in CONFIGS:
        packaged = payload / "etc/sarchive" / f"{config}.toml"
        assert packaged.read_bytes() == (REPO / "deploy" / f"{config}.example.toml").read_bytes()


def test_rpm_installs_verifies_and_erases_it_keeping_an_edited_configuration(
        rpm_build: RpmBuild, tmp_path: Path) -> None:
    """Into an empty root holding only the sarchive user %pre would create (scriptlets and
    dependencies are the other tests')."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("root:x:0:\nsarchive:x:990:\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                     "sarchive:x:990:990::/var/lib/sarchive:/sbin/nologin\n")

    def rpm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rpm", "--root", str(root), "--nodeps", *args],
                              capture_output=True, text=True, check=False, env=ENV)

    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True, env=ENV)
    installed = rpm("--install", "--noscripts", str(rpm_build.rpm))
    assert installed.returncode == 0, installed.stderr
    verified = rpm("--verify", "sarchive")  # every file's digest, size, mode, owner, link
    assert (verified.returncode, verified.stdout) == (0, "")
    config = root / "etc/sarchive/web.toml"
    assert (config.stat().st_mode & 0o777, config.stat().st_gid) == (0o640, 990)
    with config.open("a") as edited:
        edited.write('admin-group = ["hpc-admins"]\n')
    erased = rpm("--erase", "--noscripts", "sarchive")
    assert erased.returncode == 0, erased.stderr
    assert sorted(p.name for p in (root / "etc/sarchive").iterdir()) == ["web.toml.rpmsave"]
    assert not (root / "opt/sarchive").exists()
    assert not any((root / "usr/bin").iterdir())


def in_namespace(payload: Path, command: str) -> subprocess.CompletedProcess[str]:
    """command in a private mount namespace where /opt is the payload's: the environment is
    where the package puts it, and nothing of the host changes."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"mount --bind {payload / 'opt'} /opt && {command}"],
                          capture_output=True, text=True, check=False, env=ENV)


def test_systemd_accepts_every_unit_and_finds_its_command(payload: Path) -> None:
    apt_install(["systemd"])  # systemd-analyze; a machine image may lack it
    units = " ".join(str(payload / "usr/lib/systemd/system" / unit) for unit in UNITS)
    verified = in_namespace(payload, f"systemd-analyze verify --man=no {units}")
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_packaged_console_script_runs_from_its_place_and_from_usr_bin(
        payload: Path, script: str) -> None:
    # Through the shebang (#!/opt/sarchive/bin/python) and /usr/bin's relative symlink.
    ran = in_namespace(payload, f"{VENV}/bin/{script} --version &&"
                       f" {payload}/usr/bin/{script} --help")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"{script} {project_version()}\nusage: {script} ")
    # Without the namespace: the environment's interpreter, wherever it was extracted.
    python = payload / "opt/sarchive/bin/python"
    assert os.readlink(python.parent / "python3.11") == str(RPM_PYTHON)
    direct = subprocess.run([str(python), str(payload / f"opt/sarchive/bin/{script}"),
                             "--version"], capture_output=True, text=True, check=False, env=ENV)
    assert (direct.returncode, direct.stdout) == (0, f"{script} {project_version()}\n")


def test_the_packaged_codec_decodes_an_event(payload: Path, tmp_path: Path) -> None:
    event = job_event(job_id="4711")
    decoded = subprocess.run(
        [str(payload / "opt/sarchive/bin/python"), "-c",
         "import sys, schemas; from schemas import JobEventCodec;"
         " print(JobEventCodec().decode(sys.stdin.buffer.read()).job_key, schemas.__file__)"],
        input=JobEventCodec().encode(event), capture_output=True, check=False, env=ENV,
        cwd=tmp_path)  # python -c puts its working directory on sys.path: not the checkout
    assert decoded.returncode == 0, decoded.stderr.decode()
    assert decoded.stdout.decode().split() == [
        event.job_key, str(payload / SITE_PACKAGES.lstrip("/") / "schemas/__init__.py")]


def test_the_packaged_producer_and_archive_consumer_carry_a_job_from_the_spool_to_the_archive(
        payload: Path, synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str,
        tmp_path: Path) -> None:
    """Their wheels' native code at work (inotify, librdkafka, fastavro), on the shared broker."""
    venv = payload / "opt/sarchive"

    def packaged(script: str, *argv: str) -> ServiceProcess:
        return ServiceProcess(script, [str(venv / "bin/python"), str(venv / "bin" / script),
                                       "--brokers", kafka_bootstrap, "--topic", kafka_topic,
                                       *argv], tmp_path / f"{script}.log",
                              env={"PYTHONPATH": ""})

    archive = tmp_path / "archive"
    archive.mkdir()
    script = b"#!/bin/bash\n#SBATCH --job-name=packaged\nsrun hostname\n"
    with packaged("sarchive-archive", "--archive", str(archive), "--time-zone", "UTC",
                  "--group", f"packaged-{kafka_topic}", "--batch-timeout", "0.2") as consumer, \
         packaged("sarchive-producer", "--cluster", "packaged", "--spool",
                  str(synthetic_spool.root), "--state-dir", str(tmp_path / "state")) as producer:
        synthetic_spool.write_job(4711, script)
        consumer.wait_until(lambda: any(archive.glob("*/job.4711_script")), 60,
                            "the job is archived", context=producer.log_tail)
        assert next(archive.glob("*/job.4711_script")).read_bytes() == script
        assert (producer.stop(), consumer.stop()) == (0, 0)
    assert "job 4711 archived" in producer.log()


def test_nothing_in_the_environment_names_the_buildroot(payload: Path,
                                                        rpm_build: RpmBuild) -> None:
    venv = payload / "opt/sarchive"
    for script in SCRIPTS:
        assert (venv / "bin" / script).read_text().startswith(f"#!{VENV}/bin/python\n")
    config = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", config, re.MULTILINE)
    assert f"-m venv --without-pip {VENV}\n" in config
    # Byte code names the installed sources (tracebacks point at real files).
    pyc = next((venv / "lib/python3.11/site-packages/producer/__pycache__").glob("main.*.pyc"))
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename == f"{SITE_PACKAGES}/producer/main.py"
    buildroot = rpm_build.wheelhouse.parent / "rpm" / "BUILDROOT"
    grep = subprocess.run(["grep", "-rlF", str(buildroot), str(venv)], capture_output=True,
                          text=True, check=False, env=ENV)
    assert grep.stdout == ""
