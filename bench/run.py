#!/usr/bin/env python3
"""Run the whole benchmark suite against the local services; print one table, write JSON.

Every run measures each stage and, in the same run, on the same payloads, its baseline; the
table shows the median of the runs with the spread (min..max), the ratio of the medians and
each target of the performance issue with pass or FAIL. The machine is shared and noisy: the
ratios are what count, absolute figures move from run to run.

    bench/run.py                 full size (what `make bench` runs)
    bench/run.py --smoke         tiny sizes, one run: proves the suite works (CI)
Exit status: 0 when every stage could be measured (targets missed or not), 1 otherwise;
a full run without the prior art comparison (cargo or its build failing) is a failure too,
unless --no-prior-art asked for it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import event_bytes
import prior_art
import spoolgen
import stages
from baselines import decode_all, r_cons, r_es, r_fs, r_prod, r_prod_latency
from harness import (
    BENCH_DIR,
    BenchError,
    Record,
    Services,
    Summary,
    discover_services,
    dump_json,
    empty_trash,
    fresh_topics,
    scratch,
    unique_name,
)

from consumers.elastic.config import EsConsumerConfig
from schemas.codec import load_schema_versions
from schemas.model import JobEvent
from schemas.version import VERSION

RESULTS = BENCH_DIR / "results" / "latest.json"
# Documents a run indexes into a throwaway index before its first Elasticsearch figure.
ES_WARM_UP_DOCS = 3000
STEADY_RATE = 500.0  # jobs/s: Slurm's documented sustained rate, the latency load
PRODUCED_VERSION = max(load_schema_versions())  # the job event version the producer writes


@dataclass(frozen=True)
class Sizes:
    runs: int
    jobs: int  # throughput of producer, consumers and baselines
    burst: int
    latency_jobs: int  # at STEADY_RATE
    memory_jobs: int
    drain_build_seconds: float
    sbatch_jobs: int
    sbatch_rate: float
    build_prior_art: bool
    # Consumers' batch_max_messages; None keeps the services' default. A smoke run's few
    # events need smaller batches: a rate is measured between batch commits.
    consumer_batch: int | None = None


FULL = Sizes(runs=3, jobs=10_000, burst=10_000, latency_jobs=5_000, memory_jobs=10_000,
             drain_build_seconds=10.0, sbatch_jobs=100, sbatch_rate=20.0,
             build_prior_art=True)
SMOKE = Sizes(runs=1, jobs=200, burst=300, latency_jobs=250, memory_jobs=200,
              drain_build_seconds=2.0, sbatch_jobs=5, sbatch_rate=10.0,
              build_prior_art=False, consumer_batch=40)

# CPU per job is measured in these stages, for these processes (/proc/<pid>/stat): rates on
# a shared machine move between runs, the CPU a job costs each process much less.
CPU_PROCESSES = {
    "producer": ("producer", "readers", "broker"),
    "archive": ("consumer", "broker"),
    "es": ("consumer", "broker", "sink"),
    "pipeline": ("producer", "readers", "broker", "archive"),
}


def cpu_names(stage: str) -> tuple[str, ...]:
    return tuple(f"cpu.{stage}.{process}_us" for process in CPU_PROCESSES[stage])


# Bytes per event: the Avro event, on the broker (its log segments: zstd batches and their
# headers), in the archive (content and disk blocks) and in the index (primary shards).
BYTES_FIGURES = ("bytes.event", "bytes.broker", "bytes.archive", "bytes.archive_blocks",
                 "bytes.index")

# The scaling step's figures; not among STAGES, which the smoke test requires finite: a smoke
# run's few hundred events give a group of two too few commits to time reliably.
GROUP_FIGURES = ("archive.group.one", "archive.group.two", "archive.group.speedup",
                 "archive.group.allowed", "archive.group.idle_cores",
                 *(f"cpu.archive.group.{size}.{process}_us" for size in ("one", "two")
                   for process in ("consumer", "broker")))

# Every figure a run produces: the stages, then the baselines. The smoke test checks them all.
STAGES = (
    "producer.throughput", "producer.write_rate",
    "producer.latency.p50_ms", "producer.latency.p99_ms", "producer.latency.p999_ms",
    "burst.write_rate", "burst.overflows", "burst.lost", "burst.ack_after_burst_s",
    "memory.producer_rss_mb",
    "archive.throughput", "archive.peak_rss_mb",
    "es.throughput", "es.peak_rss_mb", "es.drain_ratio",
    "pipeline.throughput", "pipeline.latency.p50_ms", "pipeline.latency.p99_ms",
    "sbatch.latency.p50_ms", "sbatch.latency.p99_ms",
    "event_bytes.produced.outbox", "event_bytes.produced.wire",
    *(name for stage in CPU_PROCESSES for name in cpu_names(stage)),
    *BYTES_FIGURES,
)
BASELINES = (
    "R_prod", "R_prod.latency.p50_ms", "R_prod.latency.p99_ms", "R_prod.latency.p999_ms",
    "R_cons", "R_fs", "R_es", "event_bytes.v1.outbox", "event_bytes.v1.wire",
)
PRIOR_ART = ("prior_art.throughput", "prior_art.latency.p50_ms", "prior_art.latency.p99_ms")


Step = Callable[[], dict[str, float]]


@dataclass
class RunResult:
    figures: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def attempt(result: RunResult, names: Sequence[str], step: Step) -> None:
    """Run one measuring step; a failure marks its figures NaN with the reason, and the
    suite goes on with the next step."""
    started = time.monotonic()
    label = getattr(step, "__name__", names[0])
    print(f"  {label:<20} ...", end="", flush=True)
    try:
        figures = step()
    except Exception as exc:  # one stage failing is reported in the table; the rest still run

        print(f" FAILED ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        for name in names:
            result.figures[name] = math.nan
            result.errors[name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        return
    result.figures.update(figures)
    print(f" {time.monotonic() - started:5.1f} s")


class Suite:
    """The measuring steps of one run; each returns its figures by name."""

    def __init__(self, sizes: Sizes, services: Services, seed: int,
                 new_topic: Callable[..., str], prior_art_binary: Path | None) -> None:
        self.sizes = sizes
        self.services = services
        self.kafka = services.kafka
        self.seed = seed
        self.new_topic = new_topic
        self.prior_art_binary = prior_art_binary
        self.jobs = spoolgen.make_jobs(seed, sizes.jobs, stages.FIRST_JOB_ID)
        self.latency_jobs = spoolgen.make_jobs(seed, sizes.latency_jobs, stages.FIRST_JOB_ID)
        self.records: list[Record] = []  # the producer's events: every other step's payload
        self.events: list[JobEvent] = []  # the same, decoded
        self.source = ""  # a topic holding those events (filled by R_prod)
        self.es_defaults = EsConsumerConfig()
        self.es_warm = False

    # The measuring steps after the producer stage, in order: the figures each gives and
    # the method that measures them.
    STEPS: tuple[tuple[tuple[str, ...], str], ...] = (
        (("R_prod",), "r_prod"), (("R_cons",), "r_cons"), (("R_fs",), "r_fs"),
        (("archive.throughput", "archive.peak_rss_mb", "bytes.archive", "bytes.archive_blocks",
          *cpu_names("archive")), "archive"),
        (GROUP_FIGURES, "archive_group"),
        (("R_es",), "r_es"),
        (("es.throughput", "es.peak_rss_mb", "bytes.index", *cpu_names("es")), "es"),
        (("es.drain_ratio",), "es_drain"),
        (("producer.latency.p50_ms", "producer.latency.p99_ms", "producer.latency.p999_ms"),
         "latency"),
        (("R_prod.latency.p50_ms", "R_prod.latency.p99_ms", "R_prod.latency.p999_ms"),
         "r_prod_latency"),
        (("burst.write_rate", "burst.overflows", "burst.lost", "burst.ack_after_burst_s"),
         "burst"),
        (("memory.producer_rss_mb",), "memory"),
        (("pipeline.throughput", "pipeline.latency.p50_ms", "pipeline.latency.p99_ms",
          *cpu_names("pipeline")),
         "pipeline"),
        (("sbatch.latency.p50_ms", "sbatch.latency.p99_ms"), "sbatch"),
        (("event_bytes.v1.outbox", "event_bytes.v1.wire", "event_bytes.produced.outbox",
          "event_bytes.produced.wire"), "event_bytes"),
        (PRIOR_ART, "prior_art"),
    )

    def steps(self, only: frozenset[str]) -> list[tuple[tuple[str, ...], Step]]:
        """The steps to run: all, or those named in `only` (plus R_prod when a step reads
        the topic it fills); the prior art only with its binary."""
        if only & READS_SOURCE:
            only = only | {"r_prod"}
        return [(names, getattr(self, method)) for names, method in self.STEPS
                if (not only or method in only)
                and (method != "prior_art" or self.prior_art_binary is not None)]

    def producer_throughput(self) -> dict[str, float]:
        outcome = stages.producer_throughput(self.kafka, self.new_topic("producer"), self.jobs,
                                             self.seed)
        self.records = outcome.records
        self.events = decode_all(outcome.records)
        return {"producer.throughput": outcome.throughput,
                "producer.write_rate": outcome.write_rate,
                "bytes.event": sum(len(r.value) for r in outcome.records) / len(outcome.records),
                "bytes.broker": outcome.broker_bytes_per_event,
                **cpu_figures("producer", outcome.cpu_us)}

    def r_prod(self) -> dict[str, float]:
        self.source = self.new_topic("source")
        return {"R_prod": r_prod(self.kafka, self.source, self.records)}

    def r_cons(self) -> dict[str, float]:
        return {"R_cons": r_cons(self.kafka, self._source(), len(self.records),
                                 batch=self.sizes.consumer_batch)}

    def r_fs(self) -> dict[str, float]:
        with scratch("rfs") as workdir:
            return {"R_fs": r_fs(self.events, workdir, batch=self.sizes.consumer_batch)}

    def archive(self) -> dict[str, float]:
        outcome = stages.archive_consumer(self.kafka, self._source(), len(self.records),
                                          batch=self.sizes.consumer_batch)
        return {"archive.throughput": outcome.throughput,
                "archive.peak_rss_mb": outcome.peak_rss_mb,
                "bytes.archive": outcome.stored_bytes_per_event["content"],
                "bytes.archive_blocks": outcome.stored_bytes_per_event["blocks"],
                **cpu_figures("archive", outcome.cpu_us)}

    def archive_group(self) -> dict[str, float]:
        """One archive consumer, then two in one group, each on a fresh topic of
        GROUP_PARTITIONS partitions filled with the producer's events: the capacity model's
        key input (docs/capacity.md). `allowed` is the speed-up the machine's cores allow two
        consumers: all its cores over those one consumer and the broker kept busy (their CPU
        per event times its rate), at most 2; other users of a shared machine take their
        share of the same cores (`idle_cores`: what they left beside one consumer)."""
        one, two = (stages.archive_group(
            self.kafka, self.new_topic(f"group-{members}", stages.GROUP_PARTITIONS),
            self.records, members, batch=self.sizes.consumer_batch) for members in (1, 2))
        busy = one.throughput * (one.cpu_us["consumer"] + one.cpu_us["broker"]) / 1e6
        allowed = min(2.0, (os.cpu_count() or 1) / busy)
        return {"archive.group.one": one.throughput, "archive.group.two": two.throughput,
                "archive.group.speedup": two.throughput / one.throughput,
                "archive.group.allowed": allowed,
                "archive.group.idle_cores": one.idle_cores,
                **cpu_figures("archive.group.one", one.cpu_us),
                **cpu_figures("archive.group.two", two.cpu_us)}

    def r_es(self) -> dict[str, float]:
        self._warm_up_es()
        return {"R_es": self._bulk_rate(self.events, "r-es")}

    def _bulk_rate(self, events: Sequence[JobEvent], name: str) -> float:
        # The consumer's bulk requests hold at most one Kafka batch each.
        batch = self.sizes.consumer_batch or self.es_defaults.batch_max_messages
        return r_es(self._es_url(), events, unique_name(name).replace(".", "-"),
                    min(batch, self.es_defaults.bulk_max_docs), self.es_defaults.bulk_max_bytes)

    def _warm_up_es(self) -> None:
        """Index some documents into a throwaway index first, once per run: a long-running
        node has JIT-compiled its indexing path (the first thousands of documents after a
        start index at half speed or less)."""
        if not self.es_warm:
            self._bulk_rate(self.events[:ES_WARM_UP_DOCS], "es-warm-up")
            self.es_warm = True

    def es(self) -> dict[str, float]:
        self._warm_up_es()
        outcome = stages.es_consumer(self.kafka, self._source(), len(self.records),
                                     self._es_url(), batch=self.sizes.consumer_batch)
        return {"es.throughput": outcome.throughput, "es.peak_rss_mb": outcome.peak_rss_mb,
                "bytes.index": outcome.stored_bytes_per_event["index"],
                **cpu_figures("es", outcome.cpu_us)}

    def es_drain(self) -> dict[str, float]:
        self._warm_up_es()
        outcome = stages.es_backlog_drain(
            self.kafka, self.new_topic("drain"), self.records, self._es_url(),
            rate=STEADY_RATE, build_seconds=self.sizes.drain_build_seconds,
            batch=self.sizes.consumer_batch)
        return {"es.drain_ratio": outcome["ratio"]}

    def latency(self) -> dict[str, float]:
        outcome = stages.producer_latency(self.kafka, self.new_topic("latency"),
                                          self.latency_jobs, STEADY_RATE, self.seed)
        if outcome["lost"]:
            raise BenchError(f"{outcome['lost']:.0f} jobs not delivered at 500 jobs/s")
        return {f"producer.latency.{q}": outcome[q] for q in ("p50_ms", "p99_ms", "p999_ms")}

    def r_prod_latency(self) -> dict[str, float]:
        outcome = r_prod_latency(self.kafka, self.new_topic("r-prod-latency"),
                                 self.records[:self.sizes.latency_jobs], STEADY_RATE)
        return {f"R_prod.latency.{q}": outcome[q] for q in ("p50_ms", "p99_ms", "p999_ms")}

    def burst(self) -> dict[str, float]:
        outcome = stages.producer_burst(
            self.kafka, self.new_topic("burst"),
            spoolgen.make_jobs(self.seed, self.sizes.burst, stages.FIRST_JOB_ID), self.seed)
        return {f"burst.{k}": outcome[k]
                for k in ("write_rate", "overflows", "lost", "ack_after_burst_s")}

    def memory(self) -> dict[str, float]:
        outcome = stages.producer_outbox_memory(
            spoolgen.make_jobs(self.seed, self.sizes.memory_jobs, stages.FIRST_JOB_ID))
        return {"memory.producer_rss_mb": outcome["peak_rss_mb"]}

    def pipeline(self) -> dict[str, float]:
        burst = stages.spool_to_archive(self.kafka, self.new_topic("pipeline"), self.jobs,
                                        None, self.seed, batch=self.sizes.consumer_batch)
        steady = stages.spool_to_archive(self.kafka, self.new_topic("pipeline-steady"),
                                         self.latency_jobs, STEADY_RATE, self.seed,
                                         batch=self.sizes.consumer_batch)
        if burst["lost"] or steady["lost"]:
            raise BenchError("jobs missing from the archive")
        return {"pipeline.throughput": burst["throughput"],
                "pipeline.latency.p50_ms": steady["p50_ms"],
                "pipeline.latency.p99_ms": steady["p99_ms"],
                **{f"cpu.pipeline.{name.removeprefix('cpu.')}": value
                   for name, value in burst.items() if name.startswith("cpu.")}}

    def sbatch(self) -> dict[str, float]:
        if not self.services.slurm_conf or self.services.slurm_state is None:
            raise BenchError("no Slurm: SLURM_CONF/SARCHIVE_SLURM_STATE not set")
        outcome = stages.sbatch_latency(
            self.kafka, self.new_topic("sbatch"), self.services.slurm_conf,
            self.services.slurm_state, spoolgen.make_jobs(self.seed, self.sizes.sbatch_jobs, 1),
            rate=self.sizes.sbatch_rate)
        if outcome["lost"]:
            raise BenchError(f"{outcome['lost']:.0f} sbatch jobs not delivered")
        return {"sbatch.latency.p50_ms": outcome["p50_ms"],
                "sbatch.latency.p99_ms": outcome["p99_ms"]}

    def event_bytes(self) -> dict[str, float]:
        return event_bytes.measure(self.kafka, self.new_topic, self.events)

    def prior_art(self) -> dict[str, float]:
        assert self.prior_art_binary is not None  # steps() lists this step only then
        outcome = prior_art.measure(self.prior_art_binary, self.seed, self.sizes.jobs,
                                    self.sizes.latency_jobs, rate=STEADY_RATE,
                                    first_id=stages.FIRST_JOB_ID)
        if outcome["burst"]["lost"] or outcome["steady"]["lost"]:
            raise BenchError("the Rust sarchive lost jobs")
        return {"prior_art.throughput": outcome["burst"]["throughput"],
                "prior_art.latency.p50_ms": outcome["steady"]["p50_ms"],
                "prior_art.latency.p99_ms": outcome["steady"]["p99_ms"]}

    def _source(self) -> str:
        if not self.source:
            raise BenchError("R_prod did not fill the source topic")
        return self.source

    def _es_url(self) -> str:
        if not self.services.es_url:
            raise BenchError("no Elasticsearch: SARCHIVE_ES_URL is not set (run `make"
                             " services-up`)")
        return self.services.es_url


def cpu_figures(stage: str, per_job_us: dict[str, float]) -> dict[str, float]:
    """A stage's CPU per job by process, as figures `cpu.<stage>.<process>_us`."""
    return {f"cpu.{stage}.{process}_us": us for process, us in per_job_us.items()}


# Steps that read the topic R_prod fills.
READS_SOURCE = frozenset({"r_cons", "archive", "es"})


def measure_run(sizes: Sizes, services: Services, seed: int,
                prior_art_binary: Path | None, only: frozenset[str] = frozenset()) -> RunResult:
    result = RunResult()
    with fresh_topics(services.kafka) as new_topic:
        suite = Suite(sizes, services, seed, new_topic, prior_art_binary)
        attempt(result, ("producer.throughput", "producer.write_rate", "bytes.event",
                         "bytes.broker", *cpu_names("producer")),
                suite.producer_throughput)
        if not suite.records:
            for name in (*STAGES, *BASELINES):
                result.figures.setdefault(name, math.nan)
                result.errors.setdefault(name, "not run: the producer stage delivered no"
                                         " payloads for the others")
            return result
        for names, step in suite.steps(only):
            attempt(result, names, step)
    return result


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Target:
    text: str
    check: Callable[[float], bool]
    on_ratio: bool = False  # checks the ratio to the baseline rather than the figure


def at_least(limit: float, text: str, *, on_ratio: bool = False) -> Target:
    return Target(text, lambda v: v >= limit, on_ratio)


def at_most(limit: float, text: str, *, on_ratio: bool = False) -> Target:
    return Target(text, lambda v: v <= limit, on_ratio)


@dataclass(frozen=True)
class Row:
    """One line of the table: a stage figure, its baseline (if any) and its targets."""

    stage: str
    figure: str
    unit: str
    baseline: str | None = None
    baseline_label: str = ""
    targets: tuple[Target, ...] = ()


CPU_LABELS = {"producer": "producer process", "readers": "its reader processes",
              "broker": "Kafka broker", "consumer": "consumer process",
              "sink": "Elasticsearch node", "archive": "archive consumer"}


def cpu_rows(stage: str) -> tuple[Row, ...]:
    """One row per process of a stage: its CPU per job, beside the stage's rate."""
    return tuple(Row(f"  CPU: {CPU_LABELS[process]}", name, "µs/job")
                 for process, name in zip(CPU_PROCESSES[stage], cpu_names(stage), strict=True))


ROWS = (
    Row("producer: spool -> broker ack", "producer.throughput", "jobs/s", "R_prod", "R_prod",
        (at_least(3000, "≥ 3000 jobs/s"), at_least(0.5, "≥ 50% of R_prod", on_ratio=True))),
    *cpu_rows("producer"),
    Row("  (spool generator's write rate)", "producer.write_rate", "jobs/s"),
    Row("producer latency p50, 500 jobs/s", "producer.latency.p50_ms", "ms",
        "R_prod.latency.p50_ms", "R_prod p50", (at_most(5, "≤ 5 ms"),)),
    Row("producer latency p99", "producer.latency.p99_ms", "ms", "R_prod.latency.p99_ms",
        "R_prod p99", (at_most(20, "≤ 20 ms"),)),
    Row("producer latency p99.9", "producer.latency.p999_ms", "ms", "R_prod.latency.p999_ms",
        "R_prod p99.9", (Target("< 2000 ms", lambda v: v < 2000),)),
    Row("burst: spool write rate", "burst.write_rate", "jobs/s",
        targets=(at_least(5000, "≥ 5000 jobs/s"),)),
    Row("burst: inotify overflows forced", "burst.overflows", "count",
        targets=(at_least(1, "≥ 1"),)),
    Row("burst: jobs lost", "burst.lost", "jobs", targets=(at_most(0, "0"),)),
    Row("burst: last ack after burst end", "burst.ack_after_burst_s", "s",
        targets=(at_most(5, "≤ 5 s"),)),
    Row("archive consumer (durable)", "archive.throughput", "events/s", "min(R_cons,R_fs)",
        "min(R_cons, R_fs)", (at_least(3000, "≥ 3000 events/s"),
                              at_least(0.85, "≥ 85% of min", on_ratio=True))),
    *cpu_rows("archive"),
    Row("archive: 1 consumer, 4 partitions", "archive.group.one", "events/s"),
    Row("archive: 2 consumers, one group", "archive.group.two", "events/s",
        "archive.group.one", "1 consumer"),
    Row("  speed-up of the second consumer", "archive.group.speedup", "x",
        "archive.group.allowed", "what the cores allow",
        (at_least(0.8, "≥ 80% of what the cores allow", on_ratio=True),)),
    Row("  cores idle beside one consumer", "archive.group.idle_cores", "cores"),
    Row("Elasticsearch consumer", "es.throughput", "docs/s", "R_es", "R_es",
        (at_least(0.9, "≥ 90% of R_es", on_ratio=True),)),
    *cpu_rows("es"),
    Row("ES backlog: drain/build speed", "es.drain_ratio", "x", targets=(at_least(2, "≥ 2"),)),
    Row("memory: producer, 10k outbox", "memory.producer_rss_mb", "MB",
        targets=(Target("< 200 MB", lambda v: v < 200),)),
    Row("memory: archive consumer peak", "archive.peak_rss_mb", "MB",
        targets=(Target("< 300 MB", lambda v: v < 300),)),
    Row("memory: ES consumer peak", "es.peak_rss_mb", "MB",
        targets=(Target("< 300 MB", lambda v: v < 300),)),
    Row("spool -> archive file, burst", "pipeline.throughput", "jobs/s",
        "prior_art.throughput", "Rust sarchive",
        (at_least(1, "≥ prior art", on_ratio=True),)),
    *cpu_rows("pipeline"),
    Row("spool -> archive file p50, 500/s", "pipeline.latency.p50_ms", "ms",
        "prior_art.latency.p50_ms", "Rust sarchive p50",
        (at_most(0.1, "≤ prior art / 10", on_ratio=True),)),
    Row("spool -> archive file p99, 500/s", "pipeline.latency.p99_ms", "ms",
        "prior_art.latency.p99_ms", "Rust sarchive p99"),
    Row("bytes per event: Avro event", "bytes.event", "B"),
    Row("  on the broker (log segments)", "bytes.broker", "B"),
    Row("  in the archive (content)", "bytes.archive", "B"),
    Row("  in the archive (disk blocks)", "bytes.archive_blocks", "B"),
    Row("  in the index (primary shards)", "bytes.index", "B"),
    Row("real sbatch -> broker ack p50", "sbatch.latency.p50_ms", "ms"),
    Row("real sbatch -> broker ack p99", "sbatch.latency.p99_ms", "ms"),
    Row(f"bytes/event in the outbox, v{PRODUCED_VERSION}", "event_bytes.produced.outbox",
        "bytes", "event_bytes.v1.outbox", "v1",
        (at_most(0.6, "≥ 40% below v1", on_ratio=True),)),
    Row(f"bytes/event on the wire (zstd), v{PRODUCED_VERSION}", "event_bytes.produced.wire",
        "bytes", "event_bytes.v1.wire", "v1",
        (at_most(0.6, "≥ 40% below v1", on_ratio=True),)),
)


def summarise(runs: Sequence[RunResult]) -> dict[str, Summary]:
    names = {n for run in runs for n in run.figures}
    summary = {n: Summary.of([run.figures.get(n, math.nan) for run in runs]) for n in names}
    if "R_cons" in summary and "R_fs" in summary:
        # The archive consumer's baseline is the slower of its two halves, run by run.
        summary["min(R_cons,R_fs)"] = Summary.of(
            [min(run.figures.get("R_cons", math.nan), run.figures.get("R_fs", math.nan))
             for run in runs])
    return summary


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _cell(summary: Summary | None) -> str:
    if summary is None or summary.runs == 0:
        return "n/a"
    if summary.runs == 1:
        return _fmt(summary.median)
    return f"{_fmt(summary.median)} ({_fmt(summary.low)}..{_fmt(summary.high)})"


def evaluate(summary: dict[str, Summary], skipped: set[str]) -> list[dict[str, Any]]:
    """Each row's figures, ratio and verdicts: pass, FAIL, n/a (not measured) or skipped."""
    evaluated: list[dict[str, Any]] = []
    for row in ROWS:
        value = summary.get(row.figure)
        base = summary.get(row.baseline) if row.baseline else None
        median = value.median if value is not None else math.nan
        ratio = (median / base.median if base is not None and base.median else math.nan)
        verdicts = []
        for target in row.targets:
            checked = ratio if target.on_ratio else median
            if not math.isnan(checked):
                verdict = "pass" if target.check(checked) else "FAIL"
            elif target.on_ratio and row.baseline in skipped:
                verdict = "skipped"
            else:
                verdict = "n/a"
            verdicts.append({"target": target.text, "verdict": verdict})
        evaluated.append({"stage": row.stage, "figure": row.figure, "unit": row.unit,
                          "value": value.as_json() if value else None,
                          "baseline": row.baseline, "baseline_label": row.baseline_label,
                          "baseline_value": base.as_json() if base else None,
                          "ratio": ratio, "targets": verdicts})
    return evaluated


def render_table(summary: dict[str, Summary], evaluated: Sequence[dict[str, Any]]) -> str:
    header = ("stage", "median (min..max)", "unit", "baseline", "median (min..max)", "ratio",
              "target", "result")
    lines: list[tuple[str, ...]] = []
    for row, item in zip(ROWS, evaluated, strict=True):
        targets = item["targets"] or [{"target": "", "verdict": ""}]
        for index, target in enumerate(targets):
            first = index == 0
            lines.append((
                row.stage if first else "",
                _cell(summary.get(row.figure)) if first else "",
                row.unit if first else "",
                row.baseline_label if first else "",
                _cell(summary.get(row.baseline)) if first and row.baseline else "",
                _fmt(item["ratio"]) if first and row.baseline else "",
                target["target"], target["verdict"]))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run (CI)")
    parser.add_argument("--runs", type=int, help="repetitions (default: 3, smoke: 1)")
    parser.add_argument("--jobs", type=int, help="jobs per throughput measurement")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-prior-art", action="store_true",
                        help="skip the Rust sarchive comparison")
    parser.add_argument("--only", type=lambda text: frozenset(text.split(",")),
                        default=frozenset(), metavar="STEP,...",
                        help="run only these steps after the producer stage: "
                             + ", ".join(method for _, method in Suite.STEPS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = args.only - {method for _, method in Suite.STEPS}
    if unknown:
        parser.error(f"--only: no such step: {', '.join(sorted(unknown))}")
    sizes = SMOKE if args.smoke else FULL
    if args.runs is not None:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    if args.jobs is not None:
        sizes = Sizes(**{**asdict(sizes), "jobs": args.jobs})
    services = discover_services()
    if services.slurm_conf:
        # Every service the suite starts gets the cluster's slurm.conf, as on a site: without
        # it the producer's squeue looks its configuration up in DNS, and one lost answer
        # stalls a reader for the resolver's 5 s timeout.
        os.environ.setdefault("SLURM_CONF", services.slurm_conf)
    skipped: dict[str, str] = {}
    binary: Path | None = None
    if args.no_prior_art:
        skipped["prior_art"] = "--no-prior-art"
    else:
        try:
            binary = prior_art.ensure_binary(build=sizes.build_prior_art)
        except prior_art.PriorArtUnavailableError as exc:
            skipped["prior_art"] = str(exc)
            print(f"prior art comparison skipped: {exc}")
    started = time.time()
    runs: list[RunResult] = []
    empty_trash()  # what an interrupted run left
    try:
        for index in range(sizes.runs):
            print(f"run {index + 1} of {sizes.runs} ({sizes.jobs} jobs)")
            runs.append(measure_run(sizes, services, args.seed + index, binary, args.only))
    finally:
        empty_trash()
    summary = summarise(runs)
    evaluated = evaluate(summary, set(PRIOR_ART) if "prior_art" in skipped else set())
    table = render_table(summary, evaluated)
    print()
    print(table)
    errors = {name: message for run in runs for name, message in run.errors.items()}
    for name, message in sorted(errors.items()):
        print(f"not measured: {name}: {message.splitlines()[0][:200]}")
    for name, reason in skipped.items():
        print(f"skipped: {name}: {reason.splitlines()[0]}")
    dump_json(args.output, {
        "version": VERSION, "smoke": args.smoke, "started": started,
        "seconds": time.time() - started,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "kernel": platform.release()},
        "sizes": asdict(sizes), "services": asdict(services),
        "workload": spoolgen.describe(spoolgen.make_jobs(args.seed, sizes.jobs,
                                                         stages.FIRST_JOB_ID)),
        "prior_art": {"binary": str(binary) if binary else None,
                      "version": prior_art.version(binary) if binary else None},
        "stages": {n: summary[n].as_json() for n in (*STAGES, *GROUP_FIGURES)
                   if n in summary},
        "baselines": {n: summary[n].as_json() for n in (*BASELINES, "min(R_cons,R_fs)")
                      if n in summary},
        "prior_art_figures": {n: summary[n].as_json() for n in PRIOR_ART if n in summary},
        "rows": evaluated, "runs": [asdict(r) for r in runs], "errors": errors,
        "skipped": skipped, "table": table,
    })
    print(f"\nwritten: {args.output}")
    # A full run that could not compare with the prior art has not measured a target row:
    # a failure, unless asked for (--no-prior-art); a smoke run never builds it.
    prior_art_missing = "prior_art" in skipped and not args.no_prior_art \
        and sizes.build_prior_art
    return 1 if errors or prior_art_missing else 0


if __name__ == "__main__":
    sys.exit(main())
