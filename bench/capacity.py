#!/usr/bin/env python3
"""The capacity model of docs/capacity.md: a site's partitions, consumer instances,
Elasticsearch shards and nodes, and disks, from the per-event costs a bench run measured.

    bench/capacity.py                                 the three example sites, from
                                                      bench/results/latest.json
    bench/capacity.py --results other.json --clusters 4 --peak 200 --jobs-per-year 2e7

Every input is a median of the bench run's figures: CPU per event of each process (the
producer with its readers, the broker per event written and per event read by a group, each
consumer, the Elasticsearch node) and bytes per event (on the broker, in the archive's disk
blocks, in the index's primary shards). The rules that turn them into a site are below
(`plan`); docs/capacity.md explains them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# Rules of the model (docs/capacity.md, "The rules").
HEADROOM = 2.0  # a backlog built at the peak drains at least as fast as it built
CORE_BUSY = 0.7  # a core counted at 70%: the rest is the OS, GC, merges, bursts
REPLICATION = 3  # Kafka replicas (min.insync.replicas 2), as docs/operations.md asks
ES_REPLICAS = 1  # one replica of each index shard
SHARD_BYTES = 30e9  # target size of one Elasticsearch primary shard
MIN_PARTITIONS = 6  # lets a group grow to 6 instances without repartitioning
SECONDS_PER_YEAR = 365 * 86400
MONTHS = 12


@dataclass(frozen=True)
class Costs:
    """Per event, from one bench run (µs of CPU, bytes)."""

    producer_us: float  # the producer's process and its readers
    broker_in_us: float  # the broker, per event produced (acks=all, idempotent)
    broker_out_us: float  # the broker, per event read by one consumer group
    archive_us: float
    es_consumer_us: float
    es_node_us: float  # the Elasticsearch node, indexing one document
    broker_bytes: float
    archive_bytes: float  # disk blocks
    index_bytes: float  # primary shards

    @classmethod
    def from_results(cls, document: Mapping[str, object]) -> Costs:
        stages = document["stages"]
        assert isinstance(stages, dict)

        def median(name: str) -> float:
            figure = stages.get(name)
            if not isinstance(figure, dict) or not math.isfinite(figure.get("median", math.nan)):
                raise SystemExit(f"the bench results hold no {name}: run bench/run.py first")
            return float(figure["median"])

        return cls(
            producer_us=median("cpu.producer.producer_us") + median("cpu.producer.readers_us"),
            broker_in_us=median("cpu.producer.broker_us"),
            broker_out_us=(median("cpu.archive.broker_us") + median("cpu.es.broker_us")) / 2,
            archive_us=median("cpu.archive.consumer_us"),
            es_consumer_us=median("cpu.es.consumer_us"),
            es_node_us=median("cpu.es.sink_us"),
            broker_bytes=median("bytes.broker"),
            archive_bytes=median("bytes.archive_blocks"),
            index_bytes=median("bytes.index"))


@dataclass(frozen=True)
class Site:
    name: str
    clusters: int
    peak: float  # jobs/s, all clusters together
    jobs_per_year: float


EXAMPLES = (
    Site("one cluster, 50 jobs/s peak", 1, 50, 3e6),
    Site("ten clusters, 500 jobs/s peak", 10, 500, 40e6),
    Site("national centre, 5,000 jobs/s peak", 20, 5000, 300e6),
)


def cores(rate: float, us_per_event: float) -> float:
    """Cores busy at `rate` events/s, each counted at CORE_BUSY."""
    return rate * us_per_event / 1e6 / CORE_BUSY


def plan(site: Site, costs: Costs) -> dict[str, float]:
    """What the site needs at its peak, with HEADROOM for draining a backlog, and on disk
    for a year of retention."""
    drain = site.peak * HEADROOM
    archive_instances = math.ceil(cores(drain, costs.archive_us))
    es_instances = math.ceil(cores(drain, costs.es_consumer_us))
    partitions = max(MIN_PARTITIONS, archive_instances, es_instances)
    partitions = math.ceil(partitions / MIN_PARTITIONS) * MIN_PARTITIONS
    broker_cores = cores(site.peak, costs.broker_in_us * REPLICATION) \
        + cores(drain, 2 * costs.broker_out_us)
    es_cores = cores(drain, costs.es_node_us * (1 + ES_REPLICAS))
    month_bytes = site.jobs_per_year / MONTHS * costs.index_bytes
    return {
        "producer cores (busiest cluster)": cores(site.peak / site.clusters,
                                                  costs.producer_us),
        "partitions": partitions,
        "archive consumer instances (1 core each)": archive_instances,
        "ES consumer instances (1 core each)": es_instances,
        "broker cores (3 brokers together)": broker_cores,
        "ES primary shards per monthly index": max(2, math.ceil(month_bytes / SHARD_BYTES)),
        "ES data-node cores": es_cores,
        "ES data nodes (8 cores)": max(3, math.ceil(es_cores / 8)),
        "broker disk, a year (TB)": site.jobs_per_year * costs.broker_bytes * REPLICATION
        / 1e12,
        "archive disk, a year (TB)": site.jobs_per_year * costs.archive_bytes / 1e12,
        "index disk, a year (TB)": site.jobs_per_year * costs.index_bytes
        * (1 + ES_REPLICAS) / 1e12,
    }


def render(sites: Sequence[Site], costs: Costs) -> str:
    plans = [plan(site, costs) for site in sites]
    rows = [("", *(site.name for site in sites)),
            ("clusters", *(str(site.clusters) for site in sites)),
            ("peak jobs/s", *(f"{site.peak:,.0f}" for site in sites)),
            ("jobs a year", *(f"{site.jobs_per_year:,.0f}" for site in sites))]
    for key in plans[0]:
        rows.append((key, *(_fmt(p[key]) for p in plans)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/capacity.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--clusters", type=int)
    parser.add_argument("--peak", type=float, help="jobs/s at the peak, all clusters")
    parser.add_argument("--jobs-per-year", type=float)
    args = parser.parse_args(argv)
    costs = Costs.from_results(json.loads(args.results.read_text()))
    sites: Sequence[Site] = EXAMPLES
    if args.peak is not None:
        sites = (Site("this site", args.clusters or 1, args.peak,
                      args.jobs_per_year or args.peak * SECONDS_PER_YEAR / 20),)
    print("per event:", ", ".join(f"{k} {v:,.0f}" for k, v in vars(costs).items()))
    print(render(sites, costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
