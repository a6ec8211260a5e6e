"""The local Elasticsearch of infra/elasticsearch.py is a real 8.x node that the official
Python client uses unmodified, and it has what sarchive's Elasticsearch consumer needs:
composable index templates with keyword/text/date/flattened mappings, aliases, `_bulk` with
explicit ids (create and index), match/term/range searches, `_count`, refresh; data that survives
a stop and start; and, in its secure configuration, TLS with basic auth and native users.

The shared node comes from SARCHIVE_ES_URL if set, else it is brought up through
ElasticsearchService (reused when already up). Restart and security tests run their own
throwaway nodes on other ports and run dirs, so they never disturb the shared node.
A node that cannot start fails the tests with its log tail; nothing is skipped.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TlsError
from elasticsearch import (
    AuthenticationException,
    AuthorizationException,
    ConflictError,
    Elasticsearch,
    helpers,
)

from infra.elasticsearch import ElasticsearchService, ElasticsearchServiceError
from infra.registry import service_lock
from infra.service import run_dir

REPO = Path(__file__).resolve().parents[2]

# ports of the throwaway nodes (the shared ones use 19200/19300 and 19201/19301)
RESTART_PORT = int(os.environ.get("SARCHIVE_ES_TEST_RESTART_PORT", "19210"))
SECURE_TEST_PORT = int(os.environ.get("SARCHIVE_ES_TEST_SECURE_PORT", "19211"))

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "job_key": {"type": "keyword"},
        "cluster": {"type": "keyword"},
        "user": {"type": "keyword"},
        "script": {"type": "text"},
        "submit_time": {"type": "date"},
        "environment": {"type": "flattened"},
        "command": {"type": "match_only_text"},
        "workdir": {"type": "wildcard"},
        "size": {"type": "long"},
    },
}


def start(service: ElasticsearchService) -> float:
    """install + up; pytest.fail with the log tail if the node cannot start. Seconds taken."""
    began = time.monotonic()
    try:
        service.install()
        service.up()
    except ElasticsearchServiceError as error:
        pytest.fail(f"{service.name} could not be started:\n{error}", pytrace=False)
    return time.monotonic() - began


def stop(service: ElasticsearchService) -> None:
    try:
        service.down()
    except ElasticsearchServiceError as error:
        pytest.fail(f"{service.name} could not be stopped:\n{error}", pytrace=False)


@pytest.fixture(scope="session")
def es_url() -> str:
    configured = os.environ.get("SARCHIVE_ES_URL")
    if configured:
        return configured
    service = ElasticsearchService(run_dir(), REPO)
    with service_lock(service.name):
        if not service.is_up():
            start(service)
    return str(service.env()["SARCHIVE_ES_URL"])


@pytest.fixture(scope="session")
def es(es_url: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(es_url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    """A fresh index-name prefix; its indices and template are deleted afterwards."""
    name = f"t-node-{uuid.uuid4().hex[:10]}"
    yield name
    es.options(ignore_status=404).indices.delete_index_template(name=name)
    indices = es.options(ignore_status=404).indices.get(index=f"{name}-*")
    for index in indices.body if indices.meta.status == 200 else {}:
        es.options(ignore_status=404).indices.delete(index=index)


def put_template(es: Elasticsearch, prefix: str, *, refresh_interval: str = "1s") -> None:
    response = es.indices.put_index_template(
        name=prefix,
        index_patterns=[f"{prefix}-*"],
        priority=500,
        template={
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "refresh_interval": refresh_interval,
            },
            "aliases": {prefix: {}},
            "mappings": MAPPINGS,
        },
    )
    assert response["acknowledged"] is True


def job_docs(prefix: str, count: int, op_type: str = "create") -> list[dict[str, Any]]:
    docs = []
    for n in range(count):
        docs.append(
            {
                "_op_type": op_type,
                "_index": f"{prefix}-2024.{5 + n % 2:02d}",
                "_id": f"hydra:slurm:{1000 + n}",
                "job_key": f"hydra:slurm:{1000 + n}",
                "cluster": "hydra",
                "user": ("alice", "bob", "carol")[n % 3],
                "script": f"#!/bin/bash\n#SBATCH --job-name=run{n}\nsrun solver case{n}.dat\n",
                "submit_time": f"2024-{5 + n % 2:02d}-{1 + n % 28:02d}T12:00:00Z",
                "environment": {
                    "SLURM_JOB_PARTITION": "gpu" if n % 2 else "cpu",
                    "HOME": f"/home/{('alice', 'bob', 'carol')[n % 3]}",
                },
                "command": f"python train.py --epoch {n}",
                "workdir": f"/scratch/run{n}/out",
                "size": n * 100,
            }
        )
    return docs


def source(action: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The document of a bulk action (without _op_type/_index/_id), with changes."""
    return {k: v for k, v in action.items() if not k.startswith("_")} | changes


def bulk(es: Elasticsearch, docs: list[dict[str, Any]]) -> tuple[int, list[Any]]:
    ok, errors = helpers.bulk(es, docs, raise_on_error=False, refresh="wait_for")
    return ok, list(errors) if isinstance(errors, list) else []


# --------------------------------------------------------------------------- the shared node


def test_official_client_connects_unmodified(es: Elasticsearch) -> None:
    info = es.info()
    assert info["version"]["number"].startswith("8.")
    assert info["tagline"] == "You Know, for Search"
    assert es.ping() is True
    health = es.cluster.health(wait_for_status="yellow", timeout="30s")
    assert health["status"] in ("yellow", "green")
    assert health["number_of_nodes"] == 1
    # the product header the client checks on every response
    assert es.cluster.health().meta.headers.get("X-Elastic-Product") == "Elasticsearch"
    nodes = es.nodes.info(metric="settings")
    (node,) = nodes["nodes"].values()
    settings = node["settings"]
    assert settings["cluster"]["routing"]["allocation"]["disk"]["threshold_enabled"] == "false"
    assert settings["network"]["host"] == "127.0.0.1"


def test_template_with_the_mappings_we_need(es: Elasticsearch, prefix: str) -> None:
    put_template(es, prefix)
    stored = es.indices.get_index_template(name=prefix)["index_templates"][0]["index_template"]
    assert stored["template"]["mappings"]["properties"]["environment"] == {"type": "flattened"}

    es.indices.create(index=f"{prefix}-2024.05")
    mapping = es.indices.get_mapping(index=f"{prefix}-2024.05")[f"{prefix}-2024.05"]["mappings"]
    types = {field: spec["type"] for field, spec in mapping["properties"].items()}
    assert types["job_key"] == "keyword"
    assert types["script"] == "text"
    assert types["submit_time"] == "date"
    assert types["environment"] == "flattened"  # the real server mapper, not a stand-in
    # match_only_text / wildcard are stand-ins (text without norms / keyword): see README
    assert types["command"] == "text"
    assert types["workdir"] == "keyword"
    assert prefix in es.indices.get_alias(index=f"{prefix}-2024.05")[f"{prefix}-2024.05"]["aliases"]

    # updating the template is acknowledged and applies to indices created afterwards
    put_template(es, prefix, refresh_interval="2s")
    es.indices.create(index=f"{prefix}-2024.06")
    got = es.indices.get_settings(index=f"{prefix}-2024.06", name="index.refresh_interval")
    assert got[f"{prefix}-2024.06"]["settings"]["index"]["refresh_interval"] == "2s"


def test_strict_mapping_rejects_unknown_fields(es: Elasticsearch, prefix: str) -> None:
    put_template(es, prefix)
    ok, errors = bulk(es, [dict(job_docs(prefix, 1)[0], surprise="x")])
    assert ok == 0
    assert errors[0]["create"]["error"]["type"] == "strict_dynamic_mapping_exception"


def test_bulk_with_explicit_ids_is_idempotent(es: Elasticsearch, prefix: str) -> None:
    put_template(es, prefix)
    docs = job_docs(prefix, 40)

    ok, errors = bulk(es, docs)
    assert (ok, errors) == (40, [])
    assert es.count(index=prefix)["count"] == 40

    # create again: every document conflicts, nothing is duplicated
    ok, errors = bulk(es, docs)
    assert ok == 0
    assert len(errors) == 40
    assert {e["create"]["status"] for e in errors} == {409}
    assert es.count(index=prefix)["count"] == 40

    # op_type index overwrites in place: still 40 documents, each at version 2
    ok, errors = bulk(es, job_docs(prefix, 40, op_type="index"))
    assert (ok, errors) == (40, [])
    assert es.count(index=prefix)["count"] == 40
    doc = es.get(index=f"{prefix}-2024.05", id="hydra:slurm:1000")
    assert doc["_version"] == 2
    assert doc["_source"]["environment"]["SLURM_JOB_PARTITION"] == "cpu"

    # a single create of an existing id is a 409 for the client too
    with pytest.raises(ConflictError):
        es.create(index=f"{prefix}-2024.05", id="hydra:slurm:1000", document=source(docs[0]))


def test_searches_find_documents(es: Elasticsearch, prefix: str) -> None:
    put_template(es, prefix)
    ok, errors = bulk(es, job_docs(prefix, 30))
    assert (ok, errors) == (30, [])
    es.indices.refresh(index=prefix)

    def hits(query: dict[str, Any]) -> int:
        return int(es.search(index=prefix, query=query, size=0)["hits"]["total"]["value"])

    assert hits({"match": {"script": "srun solver"}}) == 30
    assert hits({"match": {"script": "case7.dat"}}) >= 1
    assert hits({"term": {"job_key": "hydra:slurm:1007"}}) == 1
    assert hits({"term": {"user": "alice"}}) == 10
    assert hits({"range": {"submit_time": {"gte": "2024-06-01", "lt": "2024-07-01"}}}) == 15
    assert hits({"range": {"size": {"gte": 1000, "lte": 1900}}}) == 10
    assert hits({"term": {"environment.SLURM_JOB_PARTITION": "gpu"}}) == 15
    assert hits({"term": {"environment": "/home/bob"}}) == 10  # flattened root: any value
    assert hits({"match_phrase": {"command": "--epoch 17"}}) == 1
    assert hits({"wildcard": {"workdir": {"value": "/scratch/run1*/out"}}}) == 11
    assert (
        hits(
            {
                "bool": {
                    "filter": [
                        {"term": {"cluster": "hydra"}},
                        {"range": {"submit_time": {"lt": "2024-06-01"}}},
                    ],
                    "must": [{"match": {"script": "solver"}}],
                }
            }
        )
        == 15
    )
    assert es.count(index=prefix, query={"term": {"user": "bob"}})["count"] == 10
    top = es.search(index=prefix, query={"match_all": {}}, sort=[{"submit_time": "asc"}], size=1)
    assert top["hits"]["hits"][0]["_source"]["submit_time"].startswith("2024-05-01")


def test_aliases_and_refresh(es: Elasticsearch, prefix: str) -> None:
    put_template(es, prefix)
    es.indices.create(index=f"{prefix}-2024.05")
    es.indices.update_aliases(
        actions=[
            {
                "add": {
                    "index": f"{prefix}-2024.05",
                    "alias": f"{prefix}-write",
                    "is_write_index": True,
                }
            }
        ]
    )
    es.index(
        index=f"{prefix}-write", id="a", document=source(job_docs(prefix, 1)[0]), op_type="create"
    )
    es.indices.refresh(index=f"{prefix}-write")
    assert es.count(index=prefix)["count"] == 1
    assert es.indices.exists_alias(name=f"{prefix}-write")
    es.indices.update_aliases(
        actions=[{"remove": {"index": f"{prefix}-2024.05", "alias": f"{prefix}-write"}}]
    )
    assert not es.indices.exists_alias(name=f"{prefix}-write")


# --------------------------------------------------------------------------- throwaway nodes


def test_data_survives_stop_and_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of its own (run dir tmp_path, port 19210): stop mid-stream, start, data kept."""
    monkeypatch.setenv("SARCHIVE_ES_PORT", str(RESTART_PORT))
    monkeypatch.setenv("SARCHIVE_ES_TRANSPORT_PORT", str(RESTART_PORT + 100))
    service = ElasticsearchService(tmp_path, REPO)
    assert service.env() == {"SARCHIVE_ES_URL": f"http://127.0.0.1:{RESTART_PORT}"}
    assert not service.is_up()
    first = start(service)
    try:
        service.up()  # idempotent
        assert service.is_up()
        client = Elasticsearch(service.url, request_timeout=30)
        prefix = "restart"
        put_template(client, prefix)
        ok, errors = bulk(client, job_docs(prefix, 25))
        assert (ok, errors) == (25, [])
        # documents not refreshed yet when the node is stopped: the translog keeps them
        client.index(
            index=f"{prefix}-2024.05",
            id="late",
            op_type="create",
            document=source(job_docs(prefix, 1)[0], job_key="late"),
        )

        stop(service)
        assert not service.is_up()
        with pytest.raises(TransportConnectionError):
            Elasticsearch(service.url, max_retries=0).info()
        second = start(service)
        assert service.is_up()
        client.cluster.health(index=f"{prefix}-*", wait_for_status="yellow", timeout="60s")
        assert client.count(index=prefix)["count"] == 26
        assert client.get(index=f"{prefix}-2024.05", id="late")["found"] is True
        # the template survived too
        assert client.indices.exists_index_template(name=prefix)
        client.close()
        print(f"\nthrowaway node: first start {first:.1f} s, restart {second:.1f} s")
    finally:
        stop(service)
    log = service.log_paths()[0]
    assert log.is_file() and "started" in log.read_text()


def test_secure_node_tls_and_basic_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secure configuration (port 19211, own run dir): x-pack security with TLS on HTTP,
    a file-realm superuser, native users and roles, 401 for bad credentials, 403 for others."""
    monkeypatch.setenv("SARCHIVE_ES_SECURE_PORT", str(SECURE_TEST_PORT))
    monkeypatch.setenv("SARCHIVE_ES_SECURE_TRANSPORT_PORT", str(SECURE_TEST_PORT + 100))
    service = ElasticsearchService(tmp_path, REPO, secure=True)
    env = service.env()
    assert env["SARCHIVE_ES_SECURE_URL"] == f"https://127.0.0.1:{SECURE_TEST_PORT}"
    start(service)
    try:
        url, ca = env["SARCHIVE_ES_SECURE_URL"], env["SARCHIVE_ES_SECURE_CA"]
        admin = Elasticsearch(
            url,
            basic_auth=(env["SARCHIVE_ES_SECURE_USER"], env["SARCHIVE_ES_SECURE_PASSWORD"]),
            ca_certs=ca,
            request_timeout=30,
        )
        me = admin.security.authenticate()
        assert me["username"] == env["SARCHIVE_ES_SECURE_USER"]
        assert "superuser" in me["roles"]
        assert admin.info()["version"]["number"].startswith("8.")

        with pytest.raises(AuthenticationException):
            Elasticsearch(url, basic_auth=("sarchive", "wrong"), ca_certs=ca).info()
        with pytest.raises(AuthenticationException):
            Elasticsearch(url, ca_certs=ca).cluster.health()
        with pytest.raises(TlsError, match=r"CERTIFICATE_VERIFY_FAILED"):
            Elasticsearch(url, basic_auth=("sarchive", "x")).info()  # CA not trusted

        # native realm (needs the .security index): a writer limited to its indices
        admin.security.put_role(
            name="sarchive_writer",
            cluster=["monitor", "manage_index_templates"],
            indices=[
                {
                    "names": ["jobs", "jobs-*"],
                    "privileges": ["create_index", "write", "read", "view_index_metadata"],
                }
            ],
        )
        admin.security.put_user(
            username="writer", password="writer-pass-123", roles=["sarchive_writer"]
        )
        writer = Elasticsearch(url, basic_auth=("writer", "writer-pass-123"), ca_certs=ca)
        assert writer.security.authenticate()["authentication_realm"]["type"] == "native"
        put_template(writer, "jobs")
        ok, errors = bulk(writer, job_docs("jobs", 5))
        assert (ok, errors) == (5, [])
        assert writer.count(index="jobs")["count"] == 5
        with pytest.raises(AuthorizationException):
            writer.index(index="other", id="1", document={"a": 1})

        key = admin.security.create_api_key(name="sarchive-test")
        by_key = Elasticsearch(url, api_key=key["encoded"], ca_certs=ca)
        assert by_key.security.authenticate()["authentication_type"] == "api_key"
        for client in (admin, writer, by_key):
            client.close()
    finally:
        stop(service)
