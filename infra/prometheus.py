"""A Prometheus server (Debian's `prometheus` package) with sarchive's alert rules, scraping
the services' /metrics: `infra/services up prometheus` for the demo (the documented metrics
ports), and the alerting integration test's own instance (its targets, rules and intervals).

Only the binaries of the package are used: its maintainer scripts would start the packaged
daemon on :9090 with /etc/prometheus, which infra/apt.py's policy-rc.d forbids; ours runs from
the run dir on loopback. The configuration is written as JSON, which is YAML too.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.apt import apt_install
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
from infra.service import ServiceError

# Scrape job -> targets: the metrics ports the docs and the demo give the three services.
DEMO_TARGETS: Mapping[str, Sequence[str]] = {
    "sarchive-producer": ["127.0.0.1:9310"],
    "sarchive-archive": ["127.0.0.1:9311"],
    "sarchive-es": ["127.0.0.1:9312"],
}


class PrometheusService:
    name = "prometheus"
    host = "127.0.0.1"
    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, run_dir: Path, repo: Path, *, port: int | None = None,
                 targets: Mapping[str, Sequence[str]] = DEMO_TARGETS,
                 rule_files: Sequence[Path] | None = None,
                 scrape_interval: str = "15s", evaluation_interval: str = "15s") -> None:
        self.home = run_dir / "prometheus"
        self.config = self.home / "prometheus.yml"
        self.data_dir = self.home / "data"
        self.log = self.home / "prometheus.log"
        self.pid_file = self.home / "pid"
        self.port = port or int(os.environ.get("SARCHIVE_PROMETHEUS_PORT", "19090"))
        self.targets = targets
        self.rule_files = list(rule_files if rule_files is not None
                               else [repo / "deploy" / "prometheus" / "alerts.yml"])
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- Service protocol

    def install(self) -> None:
        apt_install(["prometheus"])

    def up(self) -> None:
        if self.is_up():
            return
        if pid_alive(read_pid(self.pid_file), str(self.config)):
            self._wait_ready(read_pid(self.pid_file))
            return
        if tcp_open(self.host, self.port):
            raise ServiceError(
                f"prometheus: port {self.port} is taken by a process that is not ours "
                f"(no live pid in {self.pid_file}); stop it or set SARCHIVE_PROMETHEUS_PORT"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        write_if_changed(self.config, json.dumps(self._configuration(), indent=2) + "\n")
        pid = spawn_detached([
            "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={self.host}:{self.port}",
        ], self.log, self.home)
        self.pid_file.write_text(f"{pid}\n")
        self._wait_ready(pid)

    def down(self) -> None:
        stop_pid(read_pid(self.pid_file), str(self.config), self.stop_timeout, [self.log])
        self.pid_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        return pid_alive(read_pid(self.pid_file), str(self.config)) and self._ready()

    def env(self) -> dict[str, str]:
        return {"SARCHIVE_PROMETHEUS_URL": self.url}

    def log_paths(self) -> list[Path]:
        return [self.log]

    def state_paths(self) -> list[Path]:
        return [self.home]

    # -- internals

    def _configuration(self) -> dict[str, object]:
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in self.targets.items()
            ],
        }

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _wait_ready(self, pid: int | None) -> None:
        def ready() -> bool:
            if not pid_running(pid):
                raise service_error(f"prometheus (pid {pid}) exited during start-up", [self.log])
            return self._ready()

        if not wait_until(ready, self.start_timeout, 0.2):
            raise service_error(
                f"prometheus (pid {pid}) not ready on {self.url} within"
                f" {self.start_timeout:.0f} s", [self.log])
