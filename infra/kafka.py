"""One Apache Kafka 4 broker in KRaft combined mode, run from the jars infra/kafka/pom.xml lists.

Its configuration is infra/kafka/server.properties.template, with the contract's message size
limit; readiness is a real Metadata request (infra/kafka_metadata.py).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import string
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from infra.apt import apt_install
from infra.kafka_metadata import kafka_metadata_brokers
from infra.process import (
    pid_alive,
    pid_running,
    read_pid,
    service_error,
    spawn_detached,
    stop_pid,
    tcp_open,
    wait_until,
    write_if_changed,
)
from infra.service import ServiceError, repo_root


def contract_message_bytes() -> int:
    """MAX_MESSAGE_BYTES of schemas/limits.py, loaded by path: that module imports nothing,
    and infra/ runs before the project (and its dependencies) is installed."""
    spec = importlib.util.spec_from_file_location(
        "sarchive_contract_limits", repo_root() / "schemas" / "limits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.MAX_MESSAGE_BYTES)


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as `kafka-storage random-uuid` gives.

    Like Kafka's own Uuid.randomUuid, never one starting with "-": the storage tool's argument
    parser reads such an id as an option and formatting fails (one id in 64 did)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaService:
    """One Apache Kafka 4 broker in KRaft combined mode, run from jars fetched by Maven."""

    name = "kafka"
    host = "127.0.0.1"
    start_timeout = 120.0  # a cold JVM on 2 busy cores can take a while
    stop_timeout = 30.0
    jvm_options = (
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
    )
    main_class = "kafka.Kafka"
    template = "server.properties.template"
    port_env, default_port = "SARCHIVE_KAFKA_PORT", 19092
    controller_port_env, controller_offset = "SARCHIVE_KAFKA_CONTROLLER_PORT", 1

    def __init__(self, run_dir: Path, repo: Path, home: Path | None = None) -> None:
        self.home = home or run_dir / self.name
        self.data_dir = self.home / "data"
        self.config = self.home / "server.properties"
        self.log = self.home / "kafka.log"
        self.pid_file = self.home / "pid"
        self.src = repo / "infra" / "kafka"
        # Jars belong to the checkout (they follow its pom.xml), not to one run dir.
        self.lib = self.src / "target" / "lib"
        self.port = int(os.environ.get(self.port_env, str(self.default_port)))
        self.controller_port = int(
            os.environ.get(self.controller_port_env, str(self.port + self.controller_offset))
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # -- Service protocol

    def install(self) -> None:
        if shutil.which("java") is None:
            apt_install(["openjdk-17-jre-headless"])
        stamp = self.lib / ".pom.sha256"
        pom = self.src / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            return
        if shutil.which("mvn") is None:
            apt_install(["maven"])
        print(f"kafka: fetching broker jars with Maven into {self.lib}", flush=True)
        shutil.rmtree(self.lib, ignore_errors=True)  # no stale versions left on the classpath
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib}",
            ],
            capture_output=True,
            check=False,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"kafka: mvn dependency:copy-dependencies failed:\n"
                f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
            )
        stamp.write_text(digest)

    def up(self) -> None:
        if self.is_up():
            return
        self.wait_ready(self.start())

    def start(self) -> int | None:
        """Start the broker unless it runs; its pid, without waiting until it is ready."""
        if pid_alive(read_pid(self.pid_file), self.main_class):
            # Running but not answering yet (e.g. a concurrent `up`): just wait for it.
            return read_pid(self.pid_file)
        if tcp_open(self.host, self.port):
            raise ServiceError(
                f"{self.name}: port {self.port} is taken by a process that is not ours "
                f"(no live pid in {self.pid_file}); stop it or set {self.port_env}"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage_once()
        pid = spawn_detached(self._java(self.main_class, str(self.config)), self.log, self.home)
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def down(self) -> None:
        stop_pid(read_pid(self.pid_file), self.main_class, self.stop_timeout, [self.log])
        self.pid_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        if not pid_alive(read_pid(self.pid_file), self.main_class):
            return False
        return self._answers()

    def env(self) -> dict[str, str]:
        return {"SARCHIVE_KAFKA_BOOTSTRAP": self.bootstrap}

    def log_paths(self) -> list[Path]:
        return [self.log]

    def state_paths(self) -> list[Path]:
        return [self.home]

    # -- internals (the hooks a secured or clustered broker overrides)

    def _answers(self) -> bool:
        """Whether the broker serves a metadata request now."""
        try:
            return bool(kafka_metadata_brokers(self.host, self.port, timeout=2.0))
        except OSError:
            return False

    def _template_values(self) -> dict[str, object]:
        return {"port": self.port, "controller_port": self.controller_port,
                "data_dir": self.data_dir, "max_message_bytes": contract_message_bytes()}

    def _format_options(self) -> list[str]:
        """Extra options of `kafka-storage format` (e.g. SCRAM users)."""
        return []

    def _cluster_id(self) -> str:
        return new_cluster_id()

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.src / 'log4j2.xml'}",
            # kafka.logs.dir is where the broker puts its own auxiliary logs, if any.
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            f"{self.lib}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> None:
        template = string.Template((self.src / self.template).read_text())
        write_if_changed(self.config, template.substitute(self._template_values()))

    def _format_storage_once(self) -> None:
        """Format the KRaft log dir on first start only: later starts must keep the data."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config),
            *self._format_options(),
        )
        with self.log.open("a") as log:
            # Not the arguments: they may carry SCRAM passwords.
            log.write(f"=== formatting {self.data_dir} with cluster id {cluster_id}\n")
            log.flush()
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, check=False
            )
        if result.returncode != 0:
            raise service_error(f"{self.name}: formatting the storage directory failed", [self.log])

    def wait_ready(self, pid: int | None) -> None:
        def ready() -> bool:
            if not pid_running(pid):
                raise service_error(f"{self.name}: broker (pid {pid}) exited during start-up",
                                    [self.log])
            return self._answers()

        if not wait_until(ready, self.start_timeout, 0.5):
            raise service_error(
                f"{self.name}: broker (pid {pid}) did not answer a metadata request on "
                f"{self.bootstrap} within {self.start_timeout:.0f} s",
                [self.log],
            )
