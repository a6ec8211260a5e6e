"""Fixtures for the sarchive-es tests: the real Elasticsearch node of infra/services, a fresh
index prefix and dead-letter topic per test, job events on the real broker, and sarchive-es
run as a real process (its console script), killed or stopped the way an operator would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import Elasticsearch

from consumers.elastic.template import ADDED_PROPERTIES, index_template
from infra.elasticsearch import ElasticsearchService
from infra.service import repo_root, run_dir
from schemas.codec import JobEventCodec
from schemas.limits import MAX_MESSAGE_BYTES
from schemas.model import JobEvent, OwnerSource, UserSource
from schemas.wire import message_headers, message_key
from testkit.events import job_event
from testkit.processes import ServiceProcess, free_port
from testkit.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
SARCHIVE_ES = Path(sys.executable).with_name("sarchive-es")
# The node of `infra/services up elasticsearch`, on SARCHIVE_ES_PORT when that moves it.
OUR_ES_URL = ElasticsearchService(run_dir(), repo_root()).url
SECURE_NODE = "elasticsearch-secure"  # its TLS + basic-auth sibling, started only when named
CODEC = JobEventCodec()
# 2024-05-20T00:00:00Z: events of a test spread over May and June, so two monthly indices.
BASE_SUBMIT_MS = 1_716_163_200_000
HOUR_MS = 3_600_000
USERS = ("alice", "bob", "carol")
MODULES = ("gromacs/2023.1", "lammps/2Aug2023", "python/3.11.4")


# --------------------------------------------------------------------------- events


def make_events(count: int, *, cluster: str = "hydra", first_id: int = 1000) -> list[JobEvent]:
    """count distinct jobs: user n%3, module n%3 loaded in the script and module n+1%3 in the
    environment, submitted n hours after BASE_SUBMIT_MS."""
    events = []
    for n in range(count):
        submit = BASE_SUBMIT_MS + n * HOUR_MS
        module = MODULES[n % len(MODULES)]
        # Loaded in the shell before sbatch (so only in the environment), colon-separated.
        shell_modules = f"gcc:openmpi:{MODULES[(n + 1) % len(MODULES)]}"
        script = (
            f"#!/bin/bash\n#SBATCH --job-name=run{n}\n#SBATCH --time=01:00:00\n"
            f"module load {module}\nsrun /opt/apps/bin/solver --input case{n}.dat\n"
        ).encode()
        user = USERS[n % len(USERS)]
        events.append(job_event(
            cluster=cluster, job_id=str(first_id + n), submit_time=submit,
            read_time=submit + 40, script=script,
            environment=f"USER={user}\0HOME=/home/{user}\0LOADEDMODULES={shell_modules}\0"
            .encode(),
            producer_host="master1", producer_version="test", spool_files=(), user=user,
            job_name=f"run{n}", account="proj1", partition="batch",
            directives={"job-name": f"run{n}", "time": "01:00:00"},
        ))
    return events


# --------------------------------------------------------------------------- Elasticsearch


def _es_answers(url: str) -> str | None:
    """None if the node at url is healthy (yellow or green), else why not."""
    client = Elasticsearch(url, request_timeout=10)
    try:
        client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as error:  # any failure: say why the node is not usable
        return repr(error)
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def es_url() -> str:
    """The node of `infra/services up elasticsearch` (started if down), or SARCHIVE_ES_URL."""
    configured = os.environ.get("SARCHIVE_ES_URL")
    url = configured or OUR_ES_URL
    problem = _es_answers(url)
    if problem is not None and not configured:
        started = subprocess.run([str(REPO / "infra" / "services"), "up", "elasticsearch"],
                                 capture_output=True, text=True, timeout=600, check=False)
        problem = _es_answers(url) and f"{problem}\n{started.stdout}{started.stderr}"
    if problem is not None:
        pytest.fail(f"Elasticsearch at {url} does not answer: {problem}", pytrace=False)
    return url


def _services(*args: str) -> str:
    """infra/services, the way an operator runs it; its output, or the test fails with it."""
    result = subprocess.run([str(REPO / "infra" / "services"), *args], capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"infra/services {' '.join(args)} failed:\n{result.stdout}{result.stderr}",
                    pytrace=False)
    return result.stdout


@dataclass
class EsNode:
    """Stops and starts the shared node through infra/services."""

    url: str

    def stop(self) -> None:
        _services("down", "elasticsearch")

    def start(self) -> None:
        _services("up", "elasticsearch")

    def is_up(self) -> bool:
        return _es_answers(self.url) is None


@pytest.fixture
def es_node(es_url: str) -> Iterator[EsNode]:
    """Control of the node; it is up again after the test, whatever the test did."""
    if es_url != OUR_ES_URL:
        pytest.fail(f"es_node stops the node of infra/services ({OUR_ES_URL}), but the tests"
                    f" use SARCHIVE_ES_URL={es_url}", pytrace=False)
    node = EsNode(es_url)
    yield node
    if not node.is_up():
        node.start()


@dataclass(frozen=True)
class SecureNode:
    """The TLS + basic-auth node of `infra/services up elasticsearch-secure`."""

    url: str
    user: str
    password: str
    ca: Path

    def client(self, **options: Any) -> Elasticsearch:
        return Elasticsearch(self.url, basic_auth=(self.user, self.password),
                             ca_certs=str(self.ca), request_timeout=30, **options)


@pytest.fixture(scope="session")
def secure_es() -> Iterator[SecureNode]:
    """The secured node, started for the session if it was not up (and then stopped)."""
    was_up = subprocess.run([str(REPO / "infra" / "services"), "status", SECURE_NODE],
                            capture_output=True, timeout=60, check=False).returncode == 0
    if not was_up:
        _services("up", SECURE_NODE)
    exported = dict(line.removeprefix("export ").split("=", 1)
                    for line in _services("env", SECURE_NODE).splitlines() if "=" in line)
    yield SecureNode(exported["SARCHIVE_ES_SECURE_URL"], exported["SARCHIVE_ES_SECURE_USER"],
                     exported["SARCHIVE_ES_SECURE_PASSWORD"],
                     Path(exported["SARCHIVE_ES_SECURE_CA"]))
    if not was_up:
        _services("down", SECURE_NODE)


@pytest.fixture
def es(es_url: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(es_url, request_timeout=30)
    yield client
    client.close()


def delete_prefix(client: Elasticsearch, prefix: str) -> None:
    """Delete the indices and the template of an index prefix (by name: Elasticsearch 8
    refuses to delete by wildcard)."""
    client = client.options(ignore_status=404)
    indices = client.indices.get(index=f"{prefix}-*", expand_wildcards="all")
    if indices.meta.status == 200:
        for index in indices.body:
            client.indices.delete(index=index)
    client.indices.delete_index_template(name=prefix)


def _create_previous_revision_index(es: Elasticsearch, prefix: str) -> str:
    """May 2024's index (BASE_SUBMIT_MS) as revision 4 made it, without the fields later
    revisions added to the strict mapping, holding a job of that time; returns its name."""
    template = index_template(prefix)["template"]
    mappings = {**template["mappings"], "properties": {
        name: spec for name, spec in template["mappings"]["properties"].items()
        if name not in ADDED_PROPERTIES}}
    index = f"{prefix}-2024.05"
    es.indices.create(index=index, mappings=mappings, settings=template["settings"],
                      aliases=template["aliases"])
    es.index(index=index, id="old", document={
        "job_key": "old", "job_id": "old", "script": "module load gcc/9\n",
        "submit_time": BASE_SUBMIT_MS})
    return index


@pytest.fixture
def index_prefix(es: Elasticsearch) -> Iterator[str]:
    """A prefix no other test uses; its indices and template are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}-jobs"
    yield prefix
    delete_prefix(es, prefix)


@pytest.fixture
def secure_prefix(secure_es: SecureNode, index_prefix: str) -> Iterator[str]:
    """index_prefix, whose indices and template go on the secured node: deleted there."""
    yield index_prefix
    client = secure_es.client()
    try:
        delete_prefix(client, index_prefix)
    finally:
        client.close()


@dataclass(frozen=True)
class NativeUser:
    name: str
    password: str


@contextlib.contextmanager
def native_user(node: SecureNode, name: str, **role: Any) -> Iterator[NativeUser]:
    """A native-realm user with a role of its own name, both deleted afterwards."""
    user = NativeUser(name, uuid.uuid4().hex)
    client = node.client()
    try:
        client.security.put_role(name=user.name, **role)
        client.security.put_user(username=user.name, password=user.password, roles=[user.name])
        yield user
    finally:
        client.options(ignore_status=404).security.delete_user(username=user.name)
        client.options(ignore_status=404).security.delete_role(name=user.name)
        client.close()


@pytest.fixture
def writer_user(secure_es: SecureNode, secure_prefix: str) -> Iterator[NativeUser]:
    """A native-realm user holding exactly the privileges docs/elasticsearch.md asks for,
    on this test's prefix."""
    with native_user(secure_es, f"writer-{secure_prefix}", cluster=["manage_index_templates"],
                     indices=[{"names": [f"{secure_prefix}-*"],
                               "privileges": ["create_doc", "create_index",
                                              "indices:admin/mapping/put"]}]) as user:
        yield user


@pytest.fixture
def reader_user(secure_es: SecureNode) -> Iterator[NativeUser]:
    """A native-realm user who may only read: it may not install the index template."""
    with native_user(secure_es, f"reader-{uuid.uuid4().hex[:8]}",
                     indices=[{"names": ["*"], "privileges": ["read"]}]) as user:
        yield user


# --------------------------------------------------------------------------- Kafka


@pytest.fixture
def dlq_topic(kafka_bootstrap: str, kafka_topic: str) -> Iterator[str]:
    """The dead-letter topic of this test's job topic, created up front, deleted afterwards."""
    topic = f"{kafka_topic}.dlq"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=1,
                replication_factor=1,
                config={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
            )
        ]
    )[topic].result(timeout=30)
    yield topic
    with contextlib.suppress(Exception):
        admin.delete_topics([topic])[topic].result(timeout=30)


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


# --------------------------------------------------------------------------- sarchive-es


@dataclass
class EsPipeline:
    """One test's topic, dead-letter topic and index prefix on the real services, with the
    means to feed, run and inspect sarchive-es over them."""

    bootstrap: str
    topic: str
    dlq_topic: str
    es_url: str
    es: Elasticsearch
    prefix: str
    tmp_path: Path
    started: list[ServiceProcess] = field(default_factory=list)

    # -- feeding -------------------------------------------------------------------------

    def produce(self, events: Sequence[JobEvent], codec: JobEventCodec = CODEC) -> None:
        """Publish events exactly as the producer does (or as one of an older version's
        codec): key, Avro value, headers."""
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True}
        )
        for event in events:
            producer.produce(
                self.topic,
                key=message_key(event.job_key),
                value=codec.encode(event),
                # list(): a new list, which mypy types as confluent's stubs want (a list of
                # tuple[str, bytes] is not a list of their wider tuples: lists are invariant)
                headers=list(message_headers(codec)),
            )
            producer.poll(0)
        assert producer.flush(30) == 0

    def produce_raw(self, key: bytes, value: bytes) -> None:
        producer = confluent_kafka.Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(self.topic, key=key, value=value)
        assert producer.flush(30) == 0

    # -- running -------------------------------------------------------------------------

    def start_consumer(
        self, *extra: str, group: str = "sarchive-es-test", es_url: str | None = None
    ) -> ServiceProcess:
        """A running sarchive-es on this pipeline; extra flags are appended."""
        port = free_port()
        argv = [
            str(SARCHIVE_ES),
            "--brokers",
            self.bootstrap,
            "--topic",
            self.topic,
            "--dlq-topic",
            self.dlq_topic,
            "--group",
            self.group(group),
            "--es-url",
            es_url or self.es_url,
            "--index-prefix",
            self.prefix,
            "--batch-timeout",
            "0.2",
            "--retry-backoff-initial",
            "0.2",
            "--retry-backoff-max",
            "2",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            *extra,
        ]
        consumer = ServiceProcess("sarchive-es", argv,
                                  self.tmp_path / f"sarchive-es-{len(self.started)}.log",
                                  metrics_port=port)
        self.started.append(consumer.start())
        return consumer

    def group(self, name: str) -> str:
        """The consumer group id start_consumer(group=name) uses: unique to this topic."""
        return f"{name}-{self.topic}"

    # -- inspecting ----------------------------------------------------------------------

    def count(self) -> int:
        """Documents under the alias; 0 before the first index exists (404) or while its
        shard is still starting (503)."""
        es = self.es.options(ignore_status=(404, 503))
        es.indices.refresh(index=self.prefix)
        return int(es.count(index=self.prefix).get("count", 0))

    def wait_for_count(
        self, expected: int, timeout: float, consumer: ServiceProcess | None = None
    ) -> None:
        """Until the alias holds expected documents (exactly: never more); fails with the
        consumer's log if not, at once if the consumer has exited."""
        counts = [-1]

        def reached() -> bool:
            counts[0] = self.count()
            assert counts[0] <= expected, f"{counts[0]} documents, expected {expected}"
            return counts[0] == expected
        wait = wait_until if consumer is None else consumer.wait_until
        wait(reached, timeout, f"the alias holds {expected} documents", interval=0.3,
             context=lambda: f"{counts[0]} documents")

    def search_ids(self, query: dict[str, Any]) -> set[str]:
        """job_ids of every document matching query, searched through the alias (none
        while no document has created the alias yet)."""
        es = self.es.options(ignore_status=404)
        es.indices.refresh(index=self.prefix)
        response = es.search(
            index=self.prefix, query=query, size=10_000, source_includes=["job_id"]
        )
        return {hit["_source"]["job_id"] for hit in response.get("hits", {}).get("hits", [])}

    def versions(self) -> dict[str, tuple[int, int, int]]:
        """_id -> (_version, _seq_no, _primary_term) of every document under the alias."""
        self.es.indices.refresh(index=self.prefix)
        response = self.es.search(
            index=self.prefix,
            query={"match_all": {}},
            size=10_000,
            source=False,
            version=True,
            seq_no_primary_term=True,
        )
        return {
            hit["_id"]: (hit["_version"], hit["_seq_no"], hit["_primary_term"])
            for hit in response["hits"]["hits"]
        }

    def dead_letters(self, expected: int, timeout: float = 30.0) -> list[DeadLetter]:
        """The dead-letter topic's messages: exactly `expected` of them (waits a moment for
        any extra one to show up)."""
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "auto.offset.reset": "earliest",
                "group.id": f"dlq-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([self.dlq_topic])
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(1.0 if len(letters) < expected else 3.0)
                if message is None:
                    if len(letters) >= expected:
                        break
                    continue
                if message.error() is not None:
                    continue
                pairs = message.headers() or []
                assert isinstance(pairs, list), "a consumed message's headers are (name, value)"
                headers = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v or ""
                           for k, v in pairs}
                letters.append(DeadLetter(message.key(), message.value(), headers))
        finally:
            consumer.close()
        assert len(letters) == expected, f"{len(letters)} dead letters, expected {expected}"
        return letters

    def committed(self, group: str) -> int:
        """Sum over the topic's partitions of start_consumer(group=...)'s committed offsets."""
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": self.group(group)}
        )
        try:
            partitions = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            committed = consumer.committed(
                [confluent_kafka.TopicPartition(self.topic, p) for p in partitions.partitions],
                timeout=30,
            )
        finally:
            consumer.close()
        return sum(max(tp.offset, 0) for tp in committed)


@pytest.fixture
def pipeline(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
    kafka_bootstrap: str,
    kafka_topic: str,
    dlq_topic: str,
    es_url: str,
    es: Elasticsearch,
    index_prefix: str,
    tmp_path: Path,
) -> Iterator[EsPipeline]:
    """This test's EsPipeline; every sarchive-es it started and left running is killed."""
    assert SARCHIVE_ES.exists(), f"console script {SARCHIVE_ES} missing: pip install -e ."
    ours = EsPipeline(kafka_bootstrap, kafka_topic, dlq_topic, es_url, es, index_prefix, tmp_path)
    yield ours
    for consumer in ours.started:
        consumer.kill()


@pytest.fixture
def previous_revision_index() -> Callable[[Elasticsearch, str], str]:
    """create(client, prefix): May 2024's index as template revision 4 made it, see
    _create_previous_revision_index."""
    return _create_previous_revision_index


@pytest.fixture
def job_events() -> Callable[..., list[JobEvent]]:
    """make_events(count, cluster=..., first_id=...): distinct jobs, see make_events."""
    return make_events


# --------------------------------------------------------------------------- sarchive-web

WEB_CLUSTER = "webtest"
HOSTILE_SCRIPT = (b"#!/bin/bash\n#SBATCH --job-name=hostile\n"
                  b"echo '</script><script>alert(1)</script>'\n"
                  b"# <img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>\n")
HOSTILE_NAME = "say \"hi\" & <b>'bye'</b>"
# As slurmctld gives them with each job's owner.
WEB_UIDS = {"alice": 1001, "bob": 1002, "mallory": 1003}


def _web_event(name: str, n: int, **fields: Any) -> tuple[str, JobEvent]:
    user = fields.pop("user", "alice")
    defaults: dict[str, Any] = {
        "cluster": WEB_CLUSTER, "job_id": str(7000 + n),
        "submit_time": BASE_SUBMIT_MS + n * HOUR_MS,
        "read_time": BASE_SUBMIT_MS + n * HOUR_MS + 40, "user": user,
        "user_source": UserSource.USER, "owner": user, "owner_source": OwnerSource.SCHEDULER,
        "account": "proj1", "partition": "batch",
        "environment": f"USER={user}\0HOME=/home/{user}\0PATH=/usr/bin:/bin\0".encode()}
    merged = {**defaults, **fields}
    if merged["owner"] is not None:
        merged.setdefault("owner_uid", WEB_UIDS[merged["owner"]])
    return name, job_event(**merged)


def web_job_events() -> dict[str, JobEvent]:
    """The jobs of the sarchive-web tests: alice's own (two of one name, a Python script, a
    hostile one), bob's, one that claims alice only through USER in its environment while
    the scheduler says mallory owns it (a spoof) and one whose owner is unknown."""
    return dict([
        _web_event("sim1", 0, job_name="sim",
                   script=b"#!/bin/bash\n#SBATCH --job-name=sim\nmodule load gcc/9\n"
                          b"srun ./sim --steps 10\n"),
        _web_event("sim2", 1, job_name="sim",
                   script=b"#!/bin/bash\n#SBATCH --job-name=sim\nmodule load gcc/12\n"
                          b"srun ./sim --steps 20\necho done\n"),
        _web_event("python", 2, job_name="analyse",
                   script=b"#!/usr/bin/env python3\nimport sys\nprint(sys.argv)\n"),
        _web_event("hostile", 3, job_name=HOSTILE_NAME, script=HOSTILE_SCRIPT,
                   environment=b"USER=alice\0HTML=<img src=x onerror=alert(2)>\0"
                               b"SECRET_TOKEN=<redacted>\0",
                   redacted_keys=("SECRET_TOKEN",)),
        _web_event("bob", 4, user="bob", account="proj9", job_name="sim",
                   script=b"#!/bin/bash\nsrun ./bobs-secret-model\n"),
        _web_event("spoofed", 5, user="alice", owner="mallory", account="proj9",
                   job_name="sim", script=b"#!/bin/bash\nsrun ./submitted-by-bob\n"),
        _web_event("unknown", 6, user="alice", owner=None, owner_source=OwnerSource.UNKNOWN,
                   account="proj9",
                   job_name="sim", script=b"#!/bin/bash\nsrun ./nobody\n"),
    ])


@pytest.fixture
def web_jobs(pipeline: EsPipeline) -> dict[str, JobEvent]:
    """web_job_events(), indexed by a real sarchive-es from this test's topic."""
    events = web_job_events()
    pipeline.produce(list(events.values()))
    consumer = pipeline.start_consumer()
    pipeline.wait_for_count(len(events), 90, consumer)
    return events


@dataclass
class WebServer:
    url: str
    process: ServiceProcess


@pytest.fixture
def web_server(pipeline: EsPipeline, tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    """start(*flags): sarchive-web (`python -m web.main`) on this test's index, loopback, a
    free port; it answers before start returns. Every one started is stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(*flags: str) -> WebServer:
        port = free_port()
        process = ServiceProcess(
            "sarchive-web", [sys.executable, "-m", "web.main", "--es-url", pipeline.es_url,
                             "--index", pipeline.prefix, "--port", str(port),
                             "--time-zone", "UTC", *flags],
            tmp_path / f"sarchive-web-{len(started)}.log", cwd=REPO).start()
        started.append(process)
        process.wait_for_log("sarchive-web serving on", timeout=30)
        return WebServer(f"http://127.0.0.1:{port}", process)

    yield start
    for process in started:
        process.stop()
