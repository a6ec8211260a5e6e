"""The three-broker test cluster, "kafka-cluster": a KRaft controller and three brokers on
loopback, started only when named (`infra/services up kafka-cluster`), for the failover tests.

Brokers 1, 2, 3 listen (PLAINTEXT) on ${SARCHIVE_KAFKA_CLUSTER_PORT:-19292} + 0, 1, 2; the
controller (node 0) on + 3. State under <run dir>/kafka-cluster/node-<id>/, one storage
directory per node, all formatted with one cluster id. Topics default to replication factor 3,
min.insync.replicas=2 and no unclean leader election (infra/kafka/cluster-broker.properties.
template). Heaps are small (384 MB a broker), for a 2-core machine shared with other services.
The nodes are KafkaService instances: a test stops, kills and starts each one on its own.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from infra.kafka import KafkaService
from infra.process import pid_running, read_pid, tcp_open, wait_until
from infra.service import ServiceError

BROKERS = (1, 2, 3)
CONTROLLER = 0


class ClusterNode(KafkaService):
    """One node of the cluster: the controller (node 0) or a broker."""

    jvm_options = ("-Xms128m", "-Xmx384m", *KafkaService.jvm_options[2:])
    default_port = 19292

    def __init__(self, run_dir: Path, repo: Path, node_id: int) -> None:
        self.name = f"kafka-cluster-{node_id}"
        super().__init__(run_dir, repo, home=run_dir / "kafka-cluster" / f"node-{node_id}")
        self.node_id = node_id
        base = int(os.environ.get("SARCHIVE_KAFKA_CLUSTER_PORT", str(self.default_port)))
        self.controller_port = base + len(BROKERS)
        self.port = self.controller_port if node_id == CONTROLLER else base + node_id - 1
        self.template = ("cluster-controller.properties.template" if node_id == CONTROLLER
                         else "cluster-broker.properties.template")
        self.cluster_id_file = run_dir / "kafka-cluster" / "cluster-id"

    def kill(self) -> None:
        """SIGKILL, as in a crash: no controlled shutdown, no leadership handed over."""
        pid = read_pid(self.pid_file)
        if pid is not None and pid_running(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_running(pid), 30, 0.1)

    def _answers(self) -> bool:
        # A controller serves no Metadata request: its listening port is the sign of life.
        return tcp_open(self.host, self.port) if self.node_id == CONTROLLER else super()._answers()

    def _template_values(self) -> dict[str, object]:
        return {**super()._template_values(), "node_id": self.node_id,
                "voters": f"{CONTROLLER}@{self.host}:{self.controller_port}"}

    def _cluster_id(self) -> str:
        """One id for every node, made by whichever is formatted first."""
        if not self.cluster_id_file.exists():
            self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.cluster_id_file.write_text(super()._cluster_id() + "\n")
        return self.cluster_id_file.read_text().strip()


class KafkaClusterService:
    """The controller and three brokers, as one service of infra's registry."""

    name = "kafka-cluster"

    def __init__(self, run_dir: Path, repo: Path) -> None:
        self.home = run_dir / "kafka-cluster"
        self.controller = ClusterNode(run_dir, repo, CONTROLLER)
        self.brokers = {node_id: ClusterNode(run_dir, repo, node_id) for node_id in BROKERS}

    @property
    def bootstrap(self) -> str:
        return ",".join(broker.bootstrap for broker in self.brokers.values())

    def install(self) -> None:
        self.controller.install()

    def up(self) -> None:
        """The controller, then the three brokers started together (a JVM's start-up is
        mostly waiting), each waited for."""
        self.controller.up()
        started = {node_id: broker.start() for node_id, broker in self.brokers.items()
                   if not broker.is_up()}
        for node_id, pid in started.items():
            self.brokers[node_id].wait_ready(pid)

    def down(self) -> None:
        errors = []
        for node in (*self.brokers.values(), self.controller):
            try:
                node.down()
            except ServiceError as error:
                errors.append(str(error))
        if errors:
            raise ServiceError("\n".join(errors))

    def is_up(self) -> bool:
        return all(node.is_up() for node in (self.controller, *self.brokers.values()))

    def env(self) -> dict[str, str]:
        return {"SARCHIVE_KAFKA_CLUSTER_BOOTSTRAP": self.bootstrap}

    def log_paths(self) -> list[Path]:
        return [node.log for node in (self.controller, *self.brokers.values())]

    def state_paths(self) -> list[Path]:
        return [self.home]
