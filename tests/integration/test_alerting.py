"""The shipped alert rules and Grafana dashboard against a real Prometheus scraping the real
services: every alert expression and every dashboard query is valid and names only series the
services export, and the broker-unreachable alert fires when the producer's broker stops.

The broker is a private one (its own ports and run dir), so the shared broker other tests use
is never stopped; Prometheus is a private one too, scraping every second with the rules'
`for:` durations cut to seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.kafka import KafkaService
from infra.prometheus import PrometheusService
from infra.registry import ensure_up, registry
from infra.service import ServiceError, repo_root
from testkit.processes import ServiceProcess, free_port
from testkit.waiting import wait_until

REPO = repo_root()
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "sarchive-dashboard.json"
SLURM_JOB = REPO / "tests" / "fixtures" / "slurm" / "state" / "hash.8" / "job.18"
BIN = Path(sys.executable).parent
SHORT_FOR = "5s"
METRIC_NAME = re.compile(r"\b(?:sarchive_[a-z_]+|up)\b(?!\s*\()")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rules_with_short_for(directory: Path) -> Path:
    """alerts.yml with every `for:` cut to seconds: the test waits on real evaluations."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    path = directory / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # a bad query answers 400 with its error
            body = json.load(error)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/query", query=expr))

    def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == name]


@pytest.fixture
def private_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaService]:
    """A broker of this test's own, on free ports with its state under tmp_path."""
    monkeypatch.setenv("SARCHIVE_KAFKA_PORT", str(free_port()))
    monkeypatch.setenv("SARCHIVE_KAFKA_CONTROLLER_PORT", str(free_port()))
    kafka = KafkaService(tmp_path / "run", REPO)
    try:
        kafka.install()
        kafka.up()
    except ServiceError as error:
        kafka.down()
        pytest.fail(f"the private Kafka broker did not start:\n{error}", pytrace=False)
    yield kafka
    kafka.down()


@pytest.fixture
def es_url() -> str:
    """The shared Elasticsearch node, started if it is down (a failure to start fails)."""
    elasticsearch = next(s for s in registry() if s.name == "elasticsearch")
    try:
        ensure_up(elasticsearch)
    except ServiceError as error:
        pytest.fail(f"Elasticsearch could not be started:\n{error}", pytrace=False)
    return elasticsearch.env()["SARCHIVE_ES_URL"]


def start_services(tmp_path: Path, bootstrap: str, es_url: str) -> dict[str, ServiceProcess]:
    spool = tmp_path / "spool"
    shutil.copytree(SLURM_JOB, spool / SLURM_JOB.parent.name / SLURM_JOB.name)
    (tmp_path / "archive").mkdir()
    topic = f"alerting-{uuid.uuid4().hex[:8]}"
    kafka = ["--brokers", bootstrap, "--topic", topic]
    consumer = [*kafka, "--batch-timeout", "0.2", "--retry-backoff-initial", "0.2",
                "--retry-backoff-max", "1"]
    argv = {
        "sarchive-producer": ["--cluster", "alerting", "--spool", str(spool), "--state-dir",
                              str(tmp_path / "state"), *kafka, "--retry-interval", "1"],
        "sarchive-archive": ["--archive", str(tmp_path / "archive"), "--group",
                             f"{topic}-archive", *consumer],
        "sarchive-es": ["--es-url", es_url, "--index-prefix", topic, "--group",
                        f"{topic}-es", *consumer],
    }
    services: dict[str, ServiceProcess] = {}
    for name, args in argv.items():
        port = free_port()
        services[name] = ServiceProcess(
            name, [str(BIN / name), *args, "--metrics-address", "127.0.0.1", "--metrics-port",
                   str(port)], tmp_path / f"{name}.log", metrics_port=port).start()
    return services


def test_alerts_and_dashboard_queries_hold_on_real_prometheus_and_a_dead_broker_pages(
        tmp_path: Path, private_kafka: KafkaService, es_url: str) -> None:
    services = start_services(tmp_path, private_kafka.bootstrap, es_url)
    prometheus = PrometheusService(
        tmp_path / "run", REPO, port=free_port(),
        targets={name: [f"127.0.0.1:{s.metrics_port}"] for name, s in services.items()},
        rule_files=[rules_with_short_for(tmp_path)], scrape_interval="1s",
        evaluation_interval="1s")
    try:
        prometheus.install()
        prometheus.up()
        api = PrometheusApi(prometheus.url)
        archive = services["sarchive-archive"]
        # The spool's job flows to both sinks: histograms and rates have data, not only 0.
        archive.wait_for_metric("sarchive_archive_jobs_archived_total", lambda v: v == 1,
                                timeout=120)
        services["sarchive-es"].wait_for_metric("sarchive_es_documents_indexed_total",
                                                lambda v: v == 1, timeout=120)
        wait_until(lambda: len([r for r in api.vector('up{job=~"sarchive-.*"}')
                                if r["value"][1] == "1"]) == 3, 60,
                   "Prometheus scrapes all three services")
        wait_until(lambda: api.vector("sarchive_producer_broker_up == 1") != [], 60,
                   "the producer reports its broker up")
        # Lag is reported every few seconds once a partition has a position.
        wait_until(lambda: len(api.vector("sarchive_consumer_lag_seconds == 0")) == 2, 60,
                   "both consumers report being caught up")

        expressions = [rule["expr"] for rule in alert_rules()] + dashboard_queries()
        for expr in expressions:
            answer = api.query(expr)
            assert answer["status"] == "success", (expr, answer)
            assert answer["data"]["resultType"] == "vector", expr
        names = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
        missing = sorted(n for n in names if not api.vector(f"count({{__name__=~\"{n}\"}})"))
        assert not missing, f"queried but exported by no service: {missing}"
        # Every known failure reason is there at 0 before any failure.
        assert len(api.vector("sarchive_producer_jobs_failed_total == 0")) == 8
        assert api.vector("sarchive_consumer_end_to_end_seconds_count > 0")
        assert api.alerts("SarchiveBrokerUnreachable") == []

        private_kafka.down()
        wait_until(lambda: any(a["state"] == "firing"
                               for a in api.alerts("SarchiveBrokerUnreachable")), 120,
                   "SarchiveBrokerUnreachable fires",
                   context=services["sarchive-producer"].log_tail)
        (alert,) = api.alerts("SarchiveBrokerUnreachable")
        assert alert["labels"]["job"] == "sarchive-producer"
    finally:
        prometheus.down()
        for service in services.values():
            service.stop()
