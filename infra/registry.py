"""The services infra/ runs, in start order, and their start and stop under a cross-process lock."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from infra.elasticsearch import ElasticsearchService
from infra.gridengine import GridEngineService
from infra.kafka import KafkaService
from infra.kafka_cluster import KafkaClusterService
from infra.kafka_secure import SecureKafkaService
from infra.process import file_lock
from infra.prometheus import PrometheusService
from infra.service import Service, repo_root, run_dir
from infra.slurm import SlurmService

# Started only when named: the security and failover tests' own nodes would cost every `up`
# more JVMs; Prometheus serves the demo and an operator's look, the tests start their own;
# Grid Engine serves only the tests of its spool.
ON_REQUEST = frozenset(
    {"elasticsearch-secure", "prometheus", "kafka-secure", "kafka-cluster", "gridengine"}
)


def registry(run: Path | None = None, repo: Path | None = None) -> list[Service]:
    """Every service, in start order."""
    run = run or run_dir()
    repo = repo or repo_root()
    return [
        KafkaService(run, repo),
        SlurmService(run, repo),
        ElasticsearchService(run, repo),
        ElasticsearchService(run, repo, secure=True),
        PrometheusService(run, repo),
        SecureKafkaService(run, repo),
        KafkaClusterService(run, repo),
        GridEngineService(run, repo),
    ]


def select(services: list[Service], names: Sequence[str]) -> list[Service]:
    """The services named, in that order; none named: all but those started on request."""
    if not names:
        return [s for s in services if s.name not in ON_REQUEST]
    by_name = {s.name: s for s in services}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown service(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


@contextlib.contextmanager
def service_lock(name: str) -> Iterator[None]:
    """Serialise start and stop of one service across processes.

    Several engineers, `make test` and pytest sessions share one set of services; without the
    lock two concurrent `up`s would both see "down" and start two brokers on one data dir.
    """
    with file_lock(run_dir() / f".{name}.lock"):
        yield


def ensure_up(service: Service, on_start: Callable[[], object] = lambda: None) -> bool:
    """Install and start service unless it is up already; True if it had to be started.

    Raises ServiceError (with the service's log tail) if it cannot be started.
    """
    with service_lock(service.name):
        if service.is_up():
            return False
        service.install()
        on_start()
        service.up()
        return True


def ensure_down(service: Service) -> None:
    with service_lock(service.name):
        service.down()
