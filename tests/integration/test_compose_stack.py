"""docker-compose.yml runs: the whole stack (Kafka, Elasticsearch, the producer on a spool,
both consumers, sarchive-web) from the images `make images` builds, under podman-compose,
with no registry. Jobs are written into the bind-mounted spool as slurmctld writes them, by
the uid the producer runs as. The module's stack is brought up once and torn down, volumes
included, at the end (docs/containers.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra import images
from testkit.processes import free_port
from testkit.spool import SyntheticSlurmSpool
from testkit.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = "sarchive-stack-test"
SERVICE_UID = 10001  # the image's sarchive user: the spool's owner (SlurmUser) here
CLUSTER = "stack-test"
# The host ports' variables: free ports are chosen at start, never the documented 9310-9313,
# 8080 and 9200, which the shared services and other tests use.
METRICS_PORTS = {"producer": "SARCHIVE_COMPOSE_PRODUCER_METRICS_PORT",
                 "archive": "SARCHIVE_COMPOSE_ARCHIVE_METRICS_PORT",
                 "elastic": "SARCHIVE_COMPOSE_ELASTIC_METRICS_PORT",
                 "web": "SARCHIVE_COMPOSE_WEB_METRICS_PORT"}
SCRIPTS = {"producer": "sarchive-producer", "archive": "sarchive-archive",
           "elastic": "sarchive-es", "web": "sarchive-web"}
START_TIMEOUT = 300.0  # two JVMs and four Python services starting on two shared cores


def script_of(job_id: int) -> bytes:
    """A job script with bytes that are not UTF-8, which the archive must keep as they are."""
    return (f"#!/bin/bash\n#SBATCH --job-name=stack-{job_id}\necho {job_id}\n".encode()
            + b"printf '\\xff\\xfe' # \xff\xfe\n")


@dataclass
class Stack:
    env: dict[str, str]
    spool: Path
    archive: Path
    es_url: str

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(images.podman_compose()), "-p", PROJECT, "-f",
                               str(REPO / "docker-compose.yml"), *args], env=self.env,
                              cwd=REPO, capture_output=True, text=True, check=check)

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              check=False)

    def container(self, service: str) -> str:
        names = self.podman("ps", "-a", "--format", "{{.Names}}",
                            "--filter", f"label=io.podman.compose.project={PROJECT}",
                            "--filter", f"label=com.docker.compose.service={service}")
        assert names.stdout.split(), f"no container for {service}: {names.stderr}"
        return names.stdout.split()[0]

    def state(self, service: str) -> dict[str, Any]:
        inspected = self.podman("inspect", self.container(service))
        state: dict[str, Any] = json.loads(inspected.stdout)[0]["State"]
        return state

    def logs(self, service: str) -> str:
        return self.podman("logs", "--tail", "40", self.container(service)).stdout

    def write_jobs(self, job_ids: range) -> None:
        """Written by the spool's owner, as slurmctld (SlurmUser) writes them: a child process
        that takes the uid the producer's container runs as."""
        child = os.fork()
        if child == 0:
            status = 1
            try:
                os.setgroups([])
                os.setgid(SERVICE_UID)
                os.setuid(SERVICE_UID)
                spool = SyntheticSlurmSpool(self.spool)
                for job_id in job_ids:
                    spool.write_job(job_id, script_of(job_id), (b"USER=alice", b"STACK=a\nb=c"))
                status = 0
            finally:
                os._exit(status)  # the child never returns into pytest
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"writing jobs {job_ids} failed"

    def archived(self, job_id: int) -> bytes | None:
        found = list(self.archive.glob(f"*/job.{job_id}_script"))
        assert len(found) <= 1, found
        return found[0].read_bytes() if found else None

    def indexed(self) -> list[str]:
        """job_id of every document under the alias (one per document: duplicates show)."""
        try:
            self._es("POST", "/sarchive-jobs/_refresh")
            response = self._es("GET", "/sarchive-jobs/_search?size=1000&_source=job_id")
        except OSError:
            return []  # the node or the alias is not there yet
        return [hit["_source"]["job_id"] for hit in response["hits"]["hits"]]

    def _es(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.es_url + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body

    def metrics(self, service: str) -> str:
        port = self.env[METRICS_PORTS[service]]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return str(page.read().decode())
        except OSError:
            return ""

    def wait_metrics(self, service: str) -> None:
        """Until the service's own page answers on its published port."""
        def served() -> bool:
            build_info = re.search(r"^sarchive_build_info\{.*$", self.metrics(service), re.M)
            return bool(build_info and f'service="{SCRIPTS[service]}"' in build_info[0])
        wait_until(served, 60, f"{service} serves /metrics on its published port",
                   context=lambda: self.logs(service))

    def wait_all_delivered(self, job_ids: range, timeout: float) -> None:
        def delivered() -> bool:
            return (all(self.archived(job_id) is not None for job_id in job_ids)
                    and {str(job_id) for job_id in job_ids} <= set(self.indexed()))
        wait_until(delivered, timeout, f"jobs {job_ids} are archived and indexed",
                   interval=1.0, context=lambda: "\n".join(
                       f"--- {service}\n{self.logs(service)}"
                       for service in ("producer", "archive", "elastic")))


def owned_directory(prefix: str) -> Path:
    """A directory of the image's user, as a site's spool (SlurmUser's) and archive are."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(directory, SERVICE_UID, SERVICE_UID)
    return directory


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    images.build()
    spool, archive = owned_directory("sarchive-spool-"), owned_directory("sarchive-archive-")
    env = {name: value for name, value in images.podman_env().items()
           if not name.startswith("SARCHIVE_")}
    env.update({name: str(free_port()) for name in METRICS_PORTS.values()})
    es_port = free_port()
    env.update(SARCHIVE_SPOOL=str(spool), SARCHIVE_ARCHIVE=str(archive),
               SARCHIVE_CLUSTER=CLUSTER, SARCHIVE_COMPOSE_ES_PORT=str(es_port),
               SARCHIVE_COMPOSE_WEB_PORT=str(free_port()),
               SARCHIVE_COMPOSE_ES_JAVA_OPTS="-Xms512m -Xmx512m",
               SARCHIVE_COMPOSE_KAFKA_HEAP="-Xms256m -Xmx384m")
    stack = Stack(env, spool, archive, f"http://127.0.0.1:{es_port}")
    stack.compose("down", "-v", "-t", "5", check=False)  # a previous run's leftovers
    try:
        up = stack.compose("up", "-d", "--no-build", check=False)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield stack
    finally:
        stack.compose("down", "-v", "-t", "10", check=False)
        shutil.rmtree(spool)
        shutil.rmtree(archive)


def test_every_job_in_the_spool_is_archived_byte_for_byte_and_indexed_once(
        stack: Stack) -> None:
    jobs = range(1001, 1021)
    stack.write_jobs(jobs)
    stack.wait_all_delivered(jobs, START_TIMEOUT)
    for job_id in jobs:
        assert stack.archived(job_id) == script_of(job_id)
    assert sorted(stack.indexed()) == sorted(str(job_id) for job_id in jobs)


def test_every_service_serves_its_metrics_and_passes_its_healthcheck(stack: Stack) -> None:
    for service in METRICS_PORTS:
        stack.wait_metrics(service)
    for service in ("kafka", "elasticsearch", *METRICS_PORTS):
        check = stack.podman("healthcheck", "run", stack.container(service))
        assert check.returncode == 0, (service, check.stdout, check.stderr, stack.logs(service))


def test_the_broker_keeps_its_log_in_the_kafka_data_volume(stack: Stack) -> None:
    """Not in the container's /tmp, where a new container would start without the topic."""
    mounts = json.loads(stack.podman("inspect", stack.container("kafka")).stdout)[0]["Mounts"]
    volume = next(m for m in mounts if m["Destination"] == "/var/lib/kafka/data")
    assert volume["Type"] == "volume" and volume["Name"].endswith("kafka-data"), volume
    assert any(Path(volume["Source"]).glob("sarchive.jobs-*")), list(
        Path(volume["Source"]).iterdir())


def test_a_killed_consumer_is_restarted_by_its_restart_policy_and_loses_no_job(
        stack: Stack) -> None:
    before = stack.state("archive")
    assert before["Running"], before
    # SIGKILL from outside, as the kernel's OOM killer would: not `podman kill`, which is a
    # user's stop and ends the restart policy.
    os.kill(int(before["Pid"]), signal.SIGKILL)
    jobs = range(2001, 2021)
    stack.write_jobs(jobs)

    def restarted() -> bool:
        state = stack.state("archive")
        return bool(state["Running"]) and state["Pid"] != before["Pid"]
    wait_until(restarted, 120, "the archive consumer runs again",
               context=lambda: stack.logs("archive"))
    stack.wait_all_delivered(range(1001, 1021), 30)
    stack.wait_all_delivered(jobs, 120)
    for job_id in jobs:
        assert stack.archived(job_id) == script_of(job_id)
    assert sorted(stack.indexed()) == sorted(
        str(job_id) for job_id in (*range(1001, 1021), *jobs))
