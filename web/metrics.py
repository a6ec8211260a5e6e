"""sarchive-web's metrics, on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REFUSALS = ("unauthenticated", "not_found", "backend_error", "bad_request")


class WebMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "sarchive_web_request_seconds", "Time to answer a request, by route",
            ["route"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0))
        self.refused = Counter(
            "sarchive_web_refused_total", "Requests answered with an error, by reason",
            ["reason"], registry=registry)
        for reason in REFUSALS:
            self.refused.labels(reason=reason)
        self.job_views = Counter("sarchive_web_job_views_total",
                                 "Jobs shown, downloaded or compared (each audited)",
                                 registry=registry)
