"""Prometheus exposition shared by every service."""

from __future__ import annotations

import dataclasses
import platform

from prometheus_client import CollectorRegistry, Info, start_http_server

from runtime.config import setting
from schemas.version import VERSION


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    metrics_port: int = setting(0, help="serve Prometheus /metrics on this port (0: off)")
    metrics_address: str = setting("0.0.0.0", help="address the metrics endpoint binds to")


def register_build_info(registry: CollectorRegistry, service: str) -> None:
    info = Info("sarchive_build", "sarchive build and runtime", registry=registry)
    info.info({"service": service, "version": VERSION,
               "python": platform.python_version()})


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry) -> None:
    """Start the /metrics endpoint in a daemon thread when a port is configured."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=registry)
