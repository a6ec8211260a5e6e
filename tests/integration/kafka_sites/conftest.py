"""Fixtures for Kafka as sites run it: the secured broker of infra ("kafka-secure") and the
three-broker cluster ("kafka-cluster"), each started for the session when not up and stopped
at its end, and the whole pipeline (sarchive-producer, sarchive-archive, sarchive-es) run as
real processes over them, into a fresh archive and index prefix of the shared Elasticsearch.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from elasticsearch import Elasticsearch

from infra.elasticsearch import ElasticsearchService
from infra.kafka_cluster import BROKERS, ClusterNode, KafkaClusterService
from infra.kafka_secure import SecureKafkaService
from infra.kafka_tls import CertificateAuthority
from infra.registry import ensure_down, ensure_up
from infra.service import ServiceError, repo_root, run_dir
from schemas.limits import MAX_MESSAGE_BYTES
from testkit.processes import ServiceProcess, free_port
from testkit.secure_kafka import SecureKafka
from testkit.waiting import wait_until

BIN = Path(sys.executable).parent
PARTITIONS = 3
# What docs/operations.md recommends for the job topic on a site's cluster.
RECOMMENDED_TOPIC_CONFIG = {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


@contextlib.contextmanager
def started_for_session(service: Any) -> Iterator[None]:
    """service up for the block; stopped after it unless it was up before."""
    was_up = service.is_up()
    try:
        ensure_up(service)
    except ServiceError as error:
        pytest.fail(f"{service.name} could not be started:\n{error}", pytrace=False)
    yield
    if not was_up:
        ensure_down(service)


FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def report_figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Adds a line to the figures shown at the end of the run, in pytest's terminal summary:
    a passing test's output is captured and never shown, so a print would need -s."""
    return request.config.stash.setdefault(FIGURES, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = terminalreporter.config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("Kafka sites: figures")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    service = SecureKafkaService(run_dir(), repo_root())
    with started_for_session(service):
        yield SecureKafka(service.bootstrap, service.mtls_bootstrap, service.ca.pem,
                          service.credentials)


@pytest.fixture(scope="session")
def es_url() -> str:
    """The shared node of infra/services (started if down): read and written under a fresh
    index prefix per test only."""
    service = ElasticsearchService(run_dir(), repo_root())
    try:
        ensure_up(service)
    except ServiceError as error:
        pytest.fail(f"elasticsearch could not be started:\n{error}", pytrace=False)
    return service.url


def create_topics(admin: AdminClient, topics: dict[str, int], replication: int = 1,
                  config: dict[str, str] | None = None) -> None:
    """Topics name -> partitions, with the contract's message size, once every partition
    has a leader."""
    futures = admin.create_topics([
        NewTopic(name, num_partitions=count, replication_factor=replication,
                 config={"max.message.bytes": str(MAX_MESSAGE_BYTES), **(config or {})})
        for name, count in topics.items()])
    for future in futures.values():
        future.result(timeout=60)

    def led() -> bool:
        metadata = admin.list_topics(timeout=10).topics
        return all(name in metadata and metadata[name].error is None
                   and len(metadata[name].partitions) == count
                   and all(p.leader >= 0 for p in metadata[name].partitions.values())
                   for name, count in topics.items())
    wait_until(led, 60, f"every partition of {sorted(topics)} has a leader", interval=0.3)


def delete_topics(admin: AdminClient, names: Sequence[str]) -> None:
    for future in admin.delete_topics(list(names)).values():
        with contextlib.suppress(Exception):  # best effort: the test may have deleted it
            future.result(timeout=30)


@dataclass(frozen=True)
class Topics:
    topic: str
    dlq: str


@pytest.fixture
def secure_topics(secure_kafka: SecureKafka) -> Iterator[Topics]:
    """A fresh job topic and its dead-letter topic on the secured broker, created by the
    admin (clients may not create topics there); they and every ACL on them deleted after."""
    name = f"jobs.{uuid.uuid4().hex[:8]}"
    topics = Topics(name, f"{name}.dlq")
    admin = secure_kafka.admin()
    create_topics(admin, {topics.topic: PARTITIONS, topics.dlq: 1})
    yield topics
    delete_topics(admin, [topics.topic, topics.dlq])
    # None: any principal and host (the stubs type them str, librdkafka takes NULL).
    filters = [AclBindingFilter(restype, name, ResourcePatternType.LITERAL,
                                None, None,  # type: ignore[arg-type]
                                AclOperation.ANY, AclPermissionType.ANY)
               for restype, name in ((ResourceType.TOPIC, topics.topic),
                                     (ResourceType.TOPIC, topics.dlq),
                                     (ResourceType.GROUP, f"archive-{topics.topic}"),
                                     (ResourceType.GROUP, f"elastic-{topics.topic}"))]
    for future in admin.delete_acls(filters).values():
        future.result(timeout=30)


@dataclass
class Pipeline:
    """The producer and both consumers as real processes on one topic: the archive under
    tmp_path, the documents under a fresh index prefix."""

    topics: Topics
    es_url: str
    tmp_path: Path
    prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:10]}-jobs")
    started: list[ServiceProcess] = field(default_factory=list)

    @property
    def archive_root(self) -> Path:
        return self.tmp_path / "archive"

    def group(self, consumer: str) -> str:
        return f"{consumer}-{self.topics.topic}"

    def _start(self, name: str, command: str, argv: Sequence[str]) -> ServiceProcess:
        port = free_port()
        process = ServiceProcess(name, [str(BIN / command), "--metrics-address", "127.0.0.1",
                                        "--metrics-port", str(port), *argv],
                                 self.tmp_path / f"{name}-{len(self.started)}.log",
                                 metrics_port=port)
        self.started.append(process.start())
        return process

    def producer(self, kafka: Sequence[str], spool: Path, cluster: str,
                 *extra: str) -> ServiceProcess:
        """The producer watching a Slurm spool (or one shaped like it)."""
        return self._producer(kafka, ["--scheduler", "slurm", "--spool", str(spool)], cluster,
                              extra)

    def gridengine_producer(self, kafka: Sequence[str], bootstrap: Path, cluster: str,
                            *extra: str) -> ServiceProcess:
        """The producer watching the Grid Engine spool its cell's bootstrap file names."""
        return self._producer(kafka, ["--scheduler", "gridengine", "--gridengine-bootstrap",
                                      str(bootstrap)], cluster, extra)

    def _producer(self, kafka: Sequence[str], watch: Sequence[str], cluster: str,
                  extra: Sequence[str]) -> ServiceProcess:
        return self._start("producer", "sarchive-producer", [
            *kafka, "--topic", self.topics.topic, "--cluster", cluster, *watch,
            "--state-dir", str(self.tmp_path / "producer"), "--env-redact", "",
            "--env-redact-values", "", "--retry-interval", "1", *extra])

    def _consumer_flags(self, consumer: str) -> list[str]:
        return ["--topic", self.topics.topic, "--dlq-topic", self.topics.dlq, "--group",
                self.group(consumer), "--batch-timeout", "0.2", "--retry-backoff-initial",
                "0.2", "--retry-backoff-max", "1", "--kafka-property", "session.timeout.ms=6000",
                "--kafka-property", "heartbeat.interval.ms=500",
                # The failover tests restart brokers, not consumers; a consumer started again
                # by a test must not be fenced by the one it replaces (same host, same group).
                "--no-static-membership"]

    def archive(self, kafka: Sequence[str], *extra: str) -> ServiceProcess:
        self.archive_root.mkdir(exist_ok=True)
        return self._start("archive", "sarchive-archive", [
            *kafka, *self._consumer_flags("archive"), "--archive", str(self.archive_root),
            *extra])

    def elastic(self, kafka: Sequence[str], *extra: str) -> ServiceProcess:
        return self._start("elastic", "sarchive-es", [
            *kafka, *self._consumer_flags("elastic"), "--es-url", self.es_url,
            "--index-prefix", self.prefix, *extra])

    # -- what arrived

    def archived_scripts(self) -> dict[str, int]:
        """job id -> how many script files the archive holds for it."""
        counts: dict[str, int] = {}
        for path in self.archive_root.rglob("job.*_script"):
            job_id = path.name.removeprefix("job.").removesuffix("_script")
            counts[job_id] = counts.get(job_id, 0) + 1
        return counts

    def indexed(self, es: Elasticsearch) -> dict[str, int]:
        """job id -> how many documents the index prefix holds for it."""
        client = es.options(ignore_status=(404, 503))
        client.indices.refresh(index=self.prefix)
        response = client.search(index=self.prefix, size=0, aggs={
            "jobs": {"terms": {"field": "job_id", "size": 100_000}}})
        buckets = response.get("aggregations", {}).get("jobs", {}).get("buckets", [])
        return {bucket["key"]: bucket["doc_count"] for bucket in buckets}

    def logs(self) -> str:
        return "\n".join(p.log_tail(30) for p in self.started)

    def stop_all(self) -> list[int | None]:
        return [p.stop() for p in self.started if p.alive()]


def delete_prefix(es: Elasticsearch, prefix: str) -> None:
    client = es.options(ignore_status=404)
    indices = client.indices.get(index=f"{prefix}-*", expand_wildcards="all")
    if indices.meta.status == 200:
        for index in indices.body:
            client.indices.delete(index=index)
    client.indices.delete_index_template(name=prefix)


@pytest.fixture
def es(es_url: str) -> Iterator[Elasticsearch]:
    # Other tests stop and start the shared node: make sure it is up for this one.
    ensure_up(ElasticsearchService(run_dir(), repo_root()))
    client = Elasticsearch(es_url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def make_pipeline(es: Elasticsearch, es_url: str,
                  tmp_path: Path) -> Iterator[Callable[[Topics], Pipeline]]:
    """Pipelines on given topics; their processes killed and index prefixes deleted after."""
    made: list[Pipeline] = []

    def make(topics: Topics) -> Pipeline:
        made.append(Pipeline(topics, es_url, tmp_path))
        return made[-1]
    yield make
    for pipeline in made:
        for process in pipeline.started:
            process.kill()
        delete_prefix(es, pipeline.prefix)


@dataclass(frozen=True)
class BadCredentials:
    wrong_password: Path
    expired: tuple[Path, Path]  # certificate, key: CN=producer, signed by the broker's CA
    untrusted: tuple[Path, Path]  # CN=producer, signed by a CA the broker does not know
    foreign_ca: Path  # a CA that did not sign the broker's certificate


@pytest.fixture(scope="session")
def bad_credentials(secure_kafka: SecureKafka,
                    tmp_path_factory: pytest.TempPathFactory) -> BadCredentials:
    root = tmp_path_factory.mktemp("bad-credentials")
    password = root / "wrong.password"
    password.write_text("not-the-password\n")
    ours = CertificateAuthority(root, "ca")
    # The broker's CA, copied: the expired certificate is signed by the CA the broker trusts.
    shutil.copy(secure_kafka.credentials / "ca.pem", ours.pem)
    shutil.copy(secure_kafka.credentials / "ca.key", ours.key)
    foreign = CertificateAuthority(root, "foreign-ca")
    foreign.create("/O=elsewhere/CN=some other CA")
    return BadCredentials(password, ours.issue("producer", days=-1, file_stem="expired"),
                          foreign.issue("producer", file_stem="untrusted"), foreign.pem)


# --------------------------------------------------------------------------- three brokers


@pytest.fixture(scope="session")
def kafka_cluster_service() -> Iterator[KafkaClusterService]:
    service = KafkaClusterService(run_dir(), repo_root())
    with started_for_session(service):
        yield service


@dataclass
class ClusterControl:
    """The three-broker cluster as a failover test drives it."""

    service: KafkaClusterService

    @property
    def bootstrap(self) -> str:
        return self.service.bootstrap

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def broker(self, node_id: int) -> ClusterNode:
        return self.service.brokers[node_id]

    def leaders(self, topic: str) -> list[int]:
        """The leader of each partition of topic (-1: none)."""
        metadata = self.admin().list_topics(topic, timeout=10).topics[topic]
        return [int(p.leader) for _, p in sorted(metadata.partitions.items())]

    def in_sync_replicas(self, topic: str) -> set[int]:
        """The brokers in sync for any partition of topic."""
        metadata = self.admin().list_topics(topic, timeout=10).topics[topic]
        return {broker for p in metadata.partitions.values() for broker in p.isrs}

    def fully_replicated(self) -> bool:
        """Every partition of every topic (internal ones too) has all three replicas in sync."""
        try:
            topics = self.admin().list_topics(timeout=10).topics.values()
        except KafkaException:
            return False
        return all(len(p.isrs) == len(BROKERS) and p.leader >= 0
                   for t in topics for p in t.partitions.values())

    def wait_fully_replicated(self, timeout: float = 120.0) -> None:
        wait_until(self.fully_replicated, timeout, "every replica is in sync", interval=0.5)

    def start(self, node_id: int) -> None:
        try:
            self.broker(node_id).up()
        except ServiceError as error:
            pytest.fail(f"broker {node_id} did not come back:\n{error}", pytrace=False)


@pytest.fixture
def kafka_cluster(kafka_cluster_service: KafkaClusterService) -> Iterator[ClusterControl]:
    """The cluster, every broker up and in sync before the test and up again after it."""
    control = ClusterControl(kafka_cluster_service)
    control.wait_fully_replicated()
    yield control
    kafka_cluster_service.up()


@pytest.fixture
def cluster_topics(kafka_cluster: ClusterControl) -> Iterator[Topics]:
    """A fresh job topic and dead-letter topic with the settings docs/operations.md
    recommends: replication factor 3, min.insync.replicas=2, no unclean leader election."""
    name = f"jobs.{uuid.uuid4().hex[:8]}"
    topics = Topics(name, f"{name}.dlq")
    admin = kafka_cluster.admin()
    create_topics(admin, {topics.topic: PARTITIONS, topics.dlq: 1}, replication=len(BROKERS),
                  config=RECOMMENDED_TOPIC_CONFIG)
    yield topics
    kafka_cluster.service.up()  # brokers the test left down would keep the deletion waiting
    delete_topics(admin, [topics.topic, topics.dlq])
