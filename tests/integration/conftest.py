"""Fixtures for integration tests against the real local Kafka and Slurm of infra/services.

Services that are already up (`infra/services up`, or `make services-up`) are reused; otherwise
the fixtures start them through infra's registry. A service that cannot start fails the tests
loudly with its log tail: an integration test that silently skips proves nothing.

Fixtures:
    kafka_bootstrap  (session)  "127.0.0.1:19092"
    kafka_topic      (function) a fresh 3-partition topic name, deleted afterwards
    kafka_service    (function) KafkaControl: .stop() / .start() / .is_up() / .bootstrap
    slurm            (session)  SlurmCluster: .conf .state_dir .cluster .sbatch() .scancel()
                                .job_dir() .wait_job_dir()
    gridengine       (session)  GridEngineCell: .env .spool .qsub() .qdel() .qrls()
                                .record_path() .script_path() .qstat_xml(); the cell is started
                                for the session and stopped after it unless it was up
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from infra.gridengine import GridEngineService
from infra.kafka import KafkaService
from infra.kafka_metadata import kafka_metadata_brokers
from infra.registry import ensure_down, ensure_up, registry
from infra.service import ServiceError, run_dir
from infra.slurm import SlurmService
from schemas.limits import MAX_MESSAGE_BYTES
from testkit.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
INTEGRATION_DIR = Path(__file__).resolve().parent

TOPIC_PARTITIONS = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration so `-m "not integration"` runs unit tests only."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- infra


def ensure_service(name: str) -> Any:
    """Return the registered service `name`, started if it was not; pytest.fail if it won't."""
    by_name = {s.name: s for s in registry()}
    if name not in by_name:
        pytest.fail(f"no service {name!r} in infra's registry (have {sorted(by_name)})")
    service = by_name[name]
    try:
        ensure_up(service)
    except ServiceError as error:
        pytest.fail(
            f"{name} could not be started for the integration tests:\n{error}", pytrace=False
        )
    return service


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a broker that answers metadata requests."""
    configured = os.environ.get("SARCHIVE_KAFKA_BOOTSTRAP")
    ours = KafkaService(run_dir(), REPO)
    if configured and configured != ours.bootstrap:
        # Pointed elsewhere on purpose: use that broker as is, but insist that it answers.
        host, _, port = configured.rpartition(":")
        try:
            kafka_metadata_brokers(host, int(port))
        except (OSError, ValueError) as error:
            pytest.fail(
                f"SARCHIVE_KAFKA_BOOTSTRAP={configured} does not answer: {error}", pytrace=False
            )
        return configured
    return str(ensure_service("kafka").bootstrap)


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic for one test: 3 partitions, the contract's message size; deleted afterwards."""
    test_name = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:150]
    topic = f"test.{test_name}.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    new_topic = NewTopic(
        topic,
        num_partitions=TOPIC_PARTITIONS,
        replication_factor=1,
        config={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
    )
    admin.create_topics([new_topic])[topic].result(timeout=30)
    _wait_for_leaders(admin, topic)
    yield topic
    # Best effort: the test may have left the broker stopped or deleted the topic itself.
    with contextlib.suppress(Exception):
        admin.delete_topics([topic])[topic].result(timeout=30)


def _wait_for_leaders(admin: AdminClient, topic: str, timeout: float = 30.0) -> None:
    """create_topics returns once the controller knows the topic, before partitions have a
    leader; producing right away would then fail or block, so wait for every leader."""
    def led() -> bool:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        partitions = meta.partitions if meta is not None and meta.error is None else {}
        return (len(partitions) == TOPIC_PARTITIONS
                and all(p.leader >= 0 for p in partitions.values()))
    wait_until(led, timeout, f"every partition of topic {topic} has a leader", interval=0.2)


def submit(argv: list[str], script: bytes | None, cwd: Path | str,
           env: Mapping[str, str]) -> str:
    """What a scheduler's submit command (sbatch, qsub) prints, the script (if given) on its
    stdin; a refused submission fails the test with the command's error."""
    result = subprocess.run(argv, input=script if script is not None else b"",
                            capture_output=True, cwd=cwd, env=env, timeout=60, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({result.returncode}):"
                    f" {result.stderr.decode(errors='replace')}")
    return result.stdout.decode().strip()


@dataclass
class KafkaControl:
    """Lets a test take our broker down and bring it back on the same data directory."""

    service: Any
    bootstrap: str = field(init=False)

    def __post_init__(self) -> None:
        self.bootstrap = str(self.service.bootstrap)

    def stop(self) -> None:
        ensure_down(self.service)

    def start(self) -> None:
        try:
            ensure_up(self.service)
        except ServiceError as error:
            pytest.fail(f"kafka did not come back:\n{error}", pytrace=False)

    def is_up(self) -> bool:
        return bool(self.service.is_up())


@pytest.fixture
def kafka_service(kafka_bootstrap: str) -> Iterator[KafkaControl]:
    """Control of the broker; it is running again after the test, whatever the test did."""
    control = KafkaControl(ensure_service("kafka"))
    if control.bootstrap != kafka_bootstrap:
        pytest.fail(
            f"kafka_service controls the broker at {control.bootstrap}, but the tests "
            f"use SARCHIVE_KAFKA_BOOTSTRAP={kafka_bootstrap}, which we cannot stop"
        )
    yield control
    if not control.is_up():
        control.start()


# --------------------------------------------------------------------------- Slurm


@dataclass(frozen=True)
class SlurmCluster:
    """A running Slurm cluster as seen by the tests, driven through its real CLI."""

    conf: Path
    state_dir: Path
    cluster: str
    workdir: Path  # default cwd of sbatch, so slurm-<id>.out files stay out of the repo

    def sbatch(
        self,
        *args: str,
        script: bytes | None = None,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Submit with `sbatch --parsable ARGS`, the script (if given) on stdin; return the
        job id (for an array, the array job's id). env is layered over os.environ."""
        output = submit(["sbatch", "--parsable", *args], script, cwd or self.workdir,
                        self._env(env))
        # --parsable prints "<id>" or, on a multi-cluster setup, "<id>;<cluster>".
        return output.split(";")[0]

    def scancel(self, *job_ids: str) -> None:
        """Cancel jobs; each argument may itself be a comma-separated list of ids."""
        ids = [part for job_id in job_ids for part in job_id.split(",") if part]
        if not ids:
            return
        result = subprocess.run(
            ["scancel", *ids],
            capture_output=True,
            text=True,
            env=self._env(None),
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"scancel {' '.join(ids)} failed: {result.stderr}")

    def job_dir(self, job_id: str) -> Path:
        """Where slurmctld keeps the job's script and environment: hash.<id % 10>/job.<id>.
        Array tasks ("12_3") share the directory of their array job ("12")."""
        base = int(job_id.split(";", 1)[0].split("_", 1)[0])
        return self.state_dir / f"hash.{base % 10}" / f"job.{base}"

    def wait_job_dir(self, job_id: str, timeout: float = 30.0) -> Path:
        """The job's directory once both its files exist (slurmctld writes them on submit)."""
        directory = self.job_dir(job_id)
        wait_until(lambda: all((directory / name).exists() for name in ("script", "environment")),
                   timeout, f"{directory} holds script and environment")
        return directory

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, **(extra or {}), "SLURM_CONF": str(self.conf)}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> SlurmCluster:
    workdir = tmp_path_factory.mktemp("slurm-jobs")
    ours = SlurmService(run_dir(), REPO)
    configured = os.environ.get("SLURM_CONF")
    if configured and Path(configured).resolve() != ours.conf.resolve():
        return _external_slurm(Path(configured), workdir)
    service = ensure_service("slurm")
    return SlurmCluster(
        conf=service.conf, state_dir=service.state_dir, cluster=service.cluster, workdir=workdir
    )


def _external_slurm(conf: Path, workdir: Path) -> SlurmCluster:
    """SLURM_CONF names another cluster: use it, taking state dir and name from its config."""
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)", conf.read_text(), re.MULTILINE))
    state = os.environ.get("SARCHIVE_SLURM_STATE") or settings.get("StateSaveLocation")
    cluster = os.environ.get("SARCHIVE_SLURM_CLUSTER") or settings.get("ClusterName")
    if not state or not cluster:
        pytest.fail(f"SLURM_CONF={conf} has no StateSaveLocation/ClusterName")
    ping = subprocess.run(
        ["scontrol", "ping"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SLURM_CONF": str(conf)},
        check=False,
    )
    if "is UP" not in ping.stdout:
        pytest.fail(f"SLURM_CONF={conf}: slurmctld does not answer:\n{ping.stdout}{ping.stderr}")
    return SlurmCluster(conf=conf, state_dir=Path(state), cluster=cluster, workdir=workdir)


# --------------------------------------------------------------------------- Grid Engine


@dataclass(frozen=True)
class GridEngineCell:
    """A running Grid Engine cell as seen by the tests, driven through its real CLI."""

    env: Mapping[str, str]  # SGE_ROOT, SGE_CELL, the ports and SARCHIVE_GRIDENGINE_SPOOL
    spool: Path  # qmaster's spool: jobs/ and job_scripts/
    workdir: Path  # default cwd of qsub

    def qsub(self, *args: str, script: bytes | None = None, cwd: Path | str | None = None,
             env: Mapping[str, str] | None = None) -> int:
        """Submit with `qsub -terse ARGS`, the script (if given) on stdin; return the job id
        (for an array, the array job's). env is layered over os.environ."""
        output = submit(["qsub", "-terse", *args], script, cwd or self.workdir,
                        self._env(env))
        # -terse prints "<id>", or "<id>.<first>-<last>:<step>" for an array.
        return int(output.split(".")[0])

    def qdel(self, *job_ids: int) -> None:
        self._job_command("qdel", job_ids)

    def qrls(self, *job_ids: int) -> None:
        """Release held jobs."""
        self._job_command("qrls", job_ids)

    def _job_command(self, command: str, job_ids: tuple[int, ...]) -> None:
        result = subprocess.run([command, *map(str, job_ids)], capture_output=True, text=True,
                                env=self._env(None), timeout=60, check=False)
        if result.returncode != 0:
            pytest.fail(f"{command} {job_ids} failed: {result.stdout}{result.stderr}")

    def record_path(self, job_id: int) -> Path:
        """The job's record: jobs/ then its ten-digit id split 2/4/4 (for an array job a
        directory holding `common` and one file per task)."""
        digits = f"{job_id:010d}"
        return self.spool / "jobs" / digits[:2] / digits[2:6] / digits[6:]

    def script_path(self, job_id: int) -> Path:
        return self.spool / "job_scripts" / str(job_id)

    def qstat_xml(self, job_id: int) -> bytes:
        """`qstat -j ID -xml`: what qmaster holds of the job, the tests' oracle."""
        result = subprocess.run(["qstat", "-j", str(job_id), "-xml"], capture_output=True,
                                env=self._env(None), timeout=60, check=False)
        if result.returncode != 0:
            pytest.fail(f"qstat -j {job_id} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, **(extra or {}), **self.env}


@pytest.fixture(scope="session")
def gridengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridEngineCell]:
    service = GridEngineService(run_dir(), REPO)
    was_up = service.is_up()
    ensure_service("gridengine")
    yield GridEngineCell(env=service.env(), spool=service.qmaster_spool,
                         workdir=tmp_path_factory.mktemp("gridengine-jobs"))
    if not was_up:
        ensure_down(service)
