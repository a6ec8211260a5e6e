"""Measured stages: our services as real subprocesses (their console scripts) on real services.

Producer stages write jobs into a fresh spool with spoolgen, exactly as slurmctld would, and
read the outcome back from a fresh topic whose messages carry the broker's LogAppendTime: the
broker stamps a message when it appends it and acknowledges after that, so append time minus
the script's close time is the spool-to-acknowledgement latency (to the millisecond; the ack's
trip back to the producer, well under a millisecond on loopback, is not counted).

Consumer stages run the consumer on a topic filled beforehand with the producer's own
events and follow the group's committed offsets: a commit comes only after the sink made the
batch durable, so committed messages per second is durable throughput.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import spoolgen
from baselines import (
    Acks,
    decode_all,
    delete_es_prefix,
    es_client,
    latency_summary,
    produce_one,
    producer_properties,
    quiet,
    r_prod,
)
from confluent_kafka import Producer
from harness import (
    VENV_BIN,
    BenchError,
    CpuMeter,
    Record,
    Service,
    broker_topic_bytes,
    committed_total,
    listener,
    machine_idle_seconds,
    progress_rate,
    read_topic,
    scratch,
    tree_bytes,
    unique_name,
    wait_committed,
)

from schemas.codec import JobEventCodec
from schemas.model import make_job_key
from schemas.wire import message_headers, message_key
from testkit.processes import free_port
from testkit.waiting import wait_until

CLUSTER = "bench"
WARM_UP_JOBS = 20
# Job ids of the measured jobs start here; warm-up jobs take the ids below.
FIRST_JOB_ID = 1001
READY_TIMEOUT = 60.0
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify/max_queued_events")
# The inotify queue the burst's producer gets: small enough that 10,000 job directories
# overflow it whatever the producer's speed.
FORCED_QUEUE_EVENTS = 64
# How long after a burst the producer gets before what it has not delivered counts as lost.
BURST_GRACE = 30.0
# A port nothing listens on: the memory stage's producer can never deliver.
UNREACHABLE_BROKER = "127.0.0.1:9"


def job_id_of(record: Record) -> int:
    """The Slurm job id from a message key `<cluster>:slurm:<id>:<submit ms>`."""
    return int(record.key.decode().split(":")[2])


# --------------------------------------------------------------------------- producer


@dataclass
class ProducerProcess:
    """sarchive-producer on a fresh spool and state directory."""

    workdir: Path
    brokers: str
    topic: str
    extra_args: Sequence[str] = ()
    spool_dir: Path | None = None  # the spool to watch; default: a fresh one in workdir
    spool: Path = field(init=False)
    metrics_port: int = field(init=False)
    service: Service = field(init=False)

    def __post_init__(self) -> None:
        self.spool = self.spool_dir or self.workdir / "spool"
        self.spool.mkdir(exist_ok=True)
        self.metrics_port = free_port()
        self.service = Service("sarchive-producer", [
            str(VENV_BIN / "sarchive-producer"), "--cluster", CLUSTER, "--scheduler", "slurm",
            "--spool", str(self.spool), "--state-dir", str(self.workdir / "state"),
            "--brokers", self.brokers, "--topic", self.topic,
            "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
            "--log-file", str(self.workdir / "producer.log"), *self.extra_args,
        ], self.workdir / "producer.out", metrics_port=self.metrics_port)

    def metric(self, name: str) -> float:
        """0 for a sample not exposed (yet)."""
        return self.service.metric(name) or 0.0

    def start(self) -> ProducerProcess:
        self.service.start()
        try:
            wait_until(self._serving, READY_TIMEOUT, "the producer's metrics endpoint")
        except BaseException:
            self.service.stop()
            raise
        return self

    def stop(self) -> None:
        self.service.stop()

    def _serving(self) -> bool:
        self.service.require_alive()
        return self.service.metric("sarchive_producer_outbox_events") is not None

    def wait_published(self, count: float, timeout: float) -> None:
        wait_until(lambda: self.live_metric("sarchive_producer_jobs_published_total") >= count,
                 timeout, f"{count:.0f} acknowledged events")

    def live_metric(self, name: str) -> float:
        self.service.require_alive()
        return self.metric(name)

    def __enter__(self) -> ProducerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def warm_up(producer: ProducerProcess, seed: int) -> None:
    """A running producer has its broker connection and idempotence PID: get them first."""
    writer = spoolgen.SlurmSpoolWriter(producer.spool)
    for job in spoolgen.make_jobs(seed, WARM_UP_JOBS, 1):
        writer.write(job)
    producer.wait_published(WARM_UP_JOBS, 60)


def measured_records(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if job_id_of(r) >= FIRST_JOB_ID]


@dataclass
class ProducerThroughput:
    throughput: float
    write_rate: float
    records: list[Record]
    # Microseconds of CPU per job: the service's process, its readers, the broker.
    cpu_us: dict[str, float]
    broker_bytes_per_event: float  # the topic's log segments over its events


def producer_meter(producer: ProducerProcess, kafka: str,
                   **others: Callable[[], Sequence[int]]) -> CpuMeter:
    """CPU of the producer's own process, of its reader processes, of the broker and of
    the `others` (name: their pids)."""
    return CpuMeter({"producer": producer.service.main_pid,
                     "readers": producer.service.child_pids, "broker": listener(kafka),
                     **others})


def producer_throughput(kafka: str, topic: str, jobs: Sequence[spoolgen.SpoolJob],
                        seed: int) -> ProducerThroughput:
    """Jobs written as fast as the generator can (slurmctld's write pattern, vectored), from
    the first job's mkdir to the last event's acknowledgement."""
    with scratch("producer") as workdir, ProducerProcess(workdir, kafka, topic) as producer:
        warm_up(producer, seed)
        meter = producer_meter(producer, kafka)
        writer = spoolgen.SlurmSpoolWriter(producer.spool, "vectored")
        meter.start()
        run = spoolgen.write_paced(writer.write, jobs, None)
        producer.wait_published(WARM_UP_JOBS + len(jobs), 300)
        meter.stop()
    records = measured_records(read_topic(kafka, topic, WARM_UP_JOBS + len(jobs), 120))
    if len(records) != len(jobs):
        raise BenchError(f"producer: {len(records)} events for {len(jobs)} jobs")
    last_ack = max(r.timestamp_ms for r in records) / 1000
    return ProducerThroughput(len(jobs) / (last_ack - run.started), run.rate, records,
                              meter.per_job_us(len(jobs)),
                              broker_topic_bytes(kafka, topic) / (WARM_UP_JOBS + len(jobs)))


def latencies_ms(records: Sequence[Record], closed_at: dict[int, float]) -> list[float]:
    return [r.timestamp_ms - closed_at[job_id_of(r)] * 1000 for r in records
            if job_id_of(r) in closed_at]


def producer_latency(kafka: str, topic: str, jobs: Sequence[spoolgen.SpoolJob], rate: float,
                     seed: int) -> dict[str, float]:
    """Jobs written at a steady `rate` with slurmctld's exact write pattern; each job's
    latency is its event's append time minus the time its script was closed."""
    with scratch("latency") as workdir, ProducerProcess(workdir, kafka, topic) as producer:
        warm_up(producer, seed)
        writer = spoolgen.SlurmSpoolWriter(producer.spool)
        run = spoolgen.write_paced(writer.write, jobs, rate)
        producer.wait_published(WARM_UP_JOBS + len(jobs), 120)
    records = measured_records(read_topic(kafka, topic, WARM_UP_JOBS + len(jobs), 120))
    return {"write_rate": run.rate, "lost": float(len(jobs) - len(records)),
            **latency_summary(latencies_ms(records, run.closed_at))}


@contextlib.contextmanager
def small_inotify_queue(events: int) -> Iterator[None]:
    """fs.inotify.max_queued_events lowered while the block runs, then restored.

    The kernel copies the limit into an inotify instance when it is created, so only a
    process started inside the block gets the small queue; keep the block short: the
    setting is machine-wide."""
    previous = INOTIFY_SYSCTL.read_text().strip()
    try:
        INOTIFY_SYSCTL.write_text(f"{events}\n")
    except OSError as exc:
        raise BenchError(f"cannot lower {INOTIFY_SYSCTL} to force an overflow (root"
                         f" needed): {exc}") from exc
    try:
        yield
    finally:
        INOTIFY_SYSCTL.write_text(f"{previous}\n")


def producer_burst(kafka: str, topic: str, jobs: Sequence[spoolgen.SpoolJob],
                   seed: int) -> dict[str, float]:
    """All jobs written as fast as possible into a producer whose inotify queue holds only
    FORCED_QUEUE_EVENTS events, so the kernel drops events and the producer must rescan.

    A producer fast enough to drain even that queue as the jobs come would prove nothing, so
    it is paused (SIGSTOP) while the first FORCED_QUEUE_EVENTS jobs are written: each is an
    event in a watched hash directory (the warm-up made them all), so the queue overflows."""
    with scratch("burst") as workdir:
        producer = ProducerProcess(workdir, kafka, topic)
        with small_inotify_queue(FORCED_QUEUE_EVENTS):
            producer.start()  # serving metrics: its inotify instance exists by then
        try:
            warm_up(producer, seed)
            writer = spoolgen.SlurmSpoolWriter(producer.spool, "vectored")
            written = 0

            def write(job: spoolgen.SpoolJob) -> float:
                nonlocal written
                closed = writer.write(job)
                written += 1
                if written == FORCED_QUEUE_EVENTS + 1:
                    os.kill(producer.service.pid, signal.SIGCONT)
                return closed

            os.kill(producer.service.pid, signal.SIGSTOP)
            try:
                run = spoolgen.write_paced(write, jobs, None)
            finally:
                os.kill(producer.service.pid, signal.SIGCONT)
            with contextlib.suppress(BenchError):  # a loss is reported, not raised
                producer.wait_published(WARM_UP_JOBS + len(jobs), BURST_GRACE)
            overflows = producer.metric("sarchive_producer_inotify_overflows_total")
        finally:
            producer.stop()
    records = measured_records(read_topic(kafka, topic, WARM_UP_JOBS + len(jobs), 60))
    received = {job_id_of(r) for r in records}
    last_ack = max(r.timestamp_ms for r in records) / 1000 if records else float("nan")
    return {"jobs": float(len(jobs)), "write_rate": run.rate,
            "lost": float(len({j.job_id for j in jobs} - received)),
            "overflows": overflows, "ack_after_burst_s": last_ack - run.finished}


def producer_outbox_memory(jobs: Sequence[spoolgen.SpoolJob]) -> dict[str, float]:
    """RSS while every job's event waits in the outbox for a broker that never answers."""
    # It could never deliver the outbox: stopping need not wait for it.
    with scratch("memory") as workdir, \
            ProducerProcess(workdir, UNREACHABLE_BROKER, unique_name("unreachable"),
                            ["--shutdown-timeout", "1"]) as producer:
        writer = spoolgen.SlurmSpoolWriter(producer.spool, "vectored")
        spoolgen.write_paced(writer.write, jobs, None)
        wait_until(lambda: producer.live_metric("sarchive_producer_outbox_events") >= len(jobs),
                 300, f"{len(jobs)} events in the outbox")
        wait_memory_steady(producer)
        return {"outbox_events": producer.metric("sarchive_producer_outbox_events"),
                "rss_mb": producer.service.rss_mb(),
                "peak_rss_mb": producer.service.peak_rss_mb()}


def wait_memory_steady(producer: ProducerProcess, quiet: float = 1.0,
                       noise_mb: float = 1.0) -> None:
    """Until the producer's resident memory has not grown by more than `noise_mb` for `quiet`
    s: what it holds with the whole backlog in hand, not a moment of taking it in."""
    reference, since = producer.service.rss_mb(), time.monotonic()

    def steady() -> bool:
        nonlocal reference, since
        producer.service.require_alive()
        rss = producer.service.rss_mb()
        if rss > reference + noise_mb:
            reference, since = rss, time.monotonic()
        return time.monotonic() - since >= quiet

    wait_until(steady, 120, "the producer's memory stops growing", interval=0.1)


def wait_settled(producer: ProducerProcess, *, had_jobs: bool, quiet: float = 1.0) -> None:
    """Until the producer's start-up scan of a spool that already held jobs is delivered:
    something published, nothing pending or in the outbox, no new delivery for `quiet` s."""
    last, since = -1.0, time.monotonic()

    def settled() -> bool:
        nonlocal last, since
        published = producer.live_metric("sarchive_producer_jobs_published_total")
        if published != last:
            last, since = published, time.monotonic()
        return ((published > 0 or not had_jobs)
                and producer.metric("sarchive_producer_pending_jobs") == 0
                and producer.metric("sarchive_producer_outbox_events") == 0
                and time.monotonic() - since >= quiet)

    wait_until(settled, 300, "the producer's start-up scan of the Slurm spool", interval=0.2)


def sbatch_latency(kafka: str, topic: str, slurm_conf: str, state_dir: Path,
                   jobs: Sequence[spoolgen.SpoolJob], *, rate: float) -> dict[str, float]:
    """End to end through the real Slurm: jobs submitted with sbatch (held, cancelled after)
    while a producer watches the cluster's StateSaveLocation; latency from the mtime slurmctld
    gave the script to the event's append time."""
    with scratch("sbatch") as workdir, \
            ProducerProcess(workdir, kafka, topic, spool_dir=state_dir) as producer:
        wait_settled(producer, had_jobs=any(state_dir.glob("hash.*/job.*")))
        before = producer.metric("sarchive_producer_jobs_published_total")
        run = spoolgen.submit_paced(jobs, rate, state_dir, slurm_conf, workdir)
        try:
            with contextlib.suppress(BenchError):  # a loss is reported, not raised
                producer.wait_published(before + len(run.closed_at), 60)
            published = producer.metric("sarchive_producer_jobs_published_total")
        finally:
            spoolgen.cancel_jobs(run.closed_at, slurm_conf)
    records = [r for r in read_topic(kafka, topic, int(published), 120)
               if job_id_of(r) in run.closed_at]
    return {"submit_rate": run.rate, "lost": float(len(run.closed_at) - len(records)),
            **latency_summary(latencies_ms(records, run.closed_at))}


# --------------------------------------------------------------------------- consumers


@dataclass
class ConsumerResult:
    throughput: float
    peak_rss_mb: float
    # Microseconds of CPU per event after the first commit: the consumer, the broker (and
    # the Elasticsearch node for sarchive-es).
    cpu_us: dict[str, float]
    # What the sink stores per event: content and disk blocks (archive), or the primary
    # shards' store (Elasticsearch, after a flush).
    stored_bytes_per_event: dict[str, float] = field(default_factory=dict)
    idle_cores: float = math.nan  # the machine's cores left idle meanwhile, on average


def batch_args(batch: int | None) -> list[str]:
    """Command line for a batch size other than the services' default (smoke runs)."""
    return [] if batch is None else ["--batch-max-messages", str(batch)]


def run_consumer(name: str, argv: Sequence[str], kafka: str, topic: str, *, expected: int,
                 workdir: Path, sink_address: str | None = None) -> ConsumerResult:
    """Run a consumer service on a filled topic until its group committed `expected`; its
    CPU (and the broker's, and the sink service's at sink_address) counted from its first
    commit, as the rate is: start-up and the group join are no cost per event."""
    group = unique_name(name)
    service = Service(name, [str(VENV_BIN / name), "--brokers", kafka, "--topic", topic,
                             "--group", group, "--log-file", str(workdir / f"{name}.log"),
                             *argv], workdir / f"{name}.out")
    processes = {"consumer": service.main_pid, "broker": listener(kafka)}
    if sink_address is not None:
        processes["sink"] = listener(sink_address)
    meter = CpuMeter(processes)
    with service:
        timeline = wait_committed(kafka, group, topic, 1, timeout=600, alive=service.alive,
                                  interval=0.01)
        meter.start()
        first = timeline[-1][1]
        timeline += wait_committed(kafka, group, topic, expected, timeout=600,
                                   alive=service.alive)
        meter.stop()
        peak = service.peak_rss_mb()
    return ConsumerResult(progress_rate(timeline), peak, meter.per_job_us(expected - first))


# Partitions of the topic two archive consumers share: two each.
GROUP_PARTITIONS = 4


def assigned_partitions(log_text: str, topic: str) -> int:
    """How many partitions of the topic the consumer holds after the rebalances its log
    shows: each 'assigned' line adds partitions, each 'revoked' or 'lost' line takes them
    away (the cooperative assignor reports only the changes)."""
    held: set[str] = set()
    name = re.escape(topic)
    for line in log_text.splitlines():
        if " assigned [" in line:
            held |= set(re.findall(rf"{name}\[(\d+)\]", line))
        elif " revoked [" in line or " lost [" in line:
            held -= set(re.findall(rf"\('{name}', (\d+)\)", line))
    return len(held)


def archive_group(kafka: str, topic: str, records: Sequence[Record], members: int, *,
                  batch: int | None = None) -> ConsumerResult:
    """`members` sarchive-archive instances in one group, into one archive, on an empty topic
    of GROUP_PARTITIONS partitions: once every partition is assigned (so no rebalance falls
    inside the measurement) the records are produced as fast as the bare client can, and the
    group's committed progress is the rate; CPU is the members' together, and the broker's."""
    group = unique_name("sarchive-archive")
    with scratch(f"archive-group-{members}") as workdir, contextlib.ExitStack() as stack:
        archive = workdir / "archive"
        archive.mkdir()
        logs = [workdir / f"sarchive-archive-{n}.log" for n in range(members)]
        services = [stack.enter_context(Service(f"sarchive-archive-{n}", [
            str(VENV_BIN / "sarchive-archive"), "--brokers", kafka, "--topic", topic,
            "--group", group, "--group-instance-id", f"{group}-{n}", "--archive", str(archive),
            *batch_args(batch), "--log-file", str(log)], workdir / f"sarchive-archive-{n}.out"))
            for n, log in enumerate(logs)]

        def alive() -> bool:
            return all(service.alive() for service in services)

        def all_assigned() -> bool:
            if not alive():
                raise BenchError("an archive consumer of the group exited")
            counts = [assigned_partitions(log.read_text() if log.exists() else "", topic)
                      for log in logs]
            return all(counts) and sum(counts) == GROUP_PARTITIONS

        wait_until(all_assigned, 120, f"{members} consumers assigned every partition",
                   interval=0.1)
        meter = CpuMeter({
            "consumer": lambda: [pid for service in services for pid in service.main_pid()],
            "broker": listener(kafka)})
        r_prod(kafka, topic, records)  # filled faster than any consumer drains it
        timeline = wait_committed(kafka, group, topic, 1, timeout=600, alive=alive,
                                  interval=0.01)
        meter.start()
        idle, started = machine_idle_seconds(), time.monotonic()
        first = timeline[-1][1]
        timeline += wait_committed(kafka, group, topic, len(records), timeout=600,
                                   alive=alive)
        meter.stop()
        idle_cores = (machine_idle_seconds() - idle) / (time.monotonic() - started)
        peak = sum(service.peak_rss_mb() for service in services)
    return ConsumerResult(progress_rate(timeline), peak, meter.per_job_us(len(records) - first),
                          idle_cores=idle_cores)


def archive_consumer(kafka: str, topic: str, expected: int, *,
                     batch: int | None = None) -> ConsumerResult:
    """sarchive-archive with its defaults (fsync, link, directory fsync per batch)."""
    with scratch("archive") as workdir:
        archive = workdir / "archive"
        archive.mkdir()
        result = run_consumer("sarchive-archive", ["--archive", str(archive),
                                                   *batch_args(batch)],
                              kafka, topic, expected=expected, workdir=workdir)
        content, blocks = tree_bytes(archive)
        result.stored_bytes_per_event = {"content": content / expected,
                                         "blocks": blocks / expected}
        return result


def es_consumer(kafka: str, topic: str, expected: int, es_url: str, *,
                batch: int | None = None) -> ConsumerResult:
    prefix = unique_name("es").replace(".", "-")
    with scratch("es") as workdir:
        try:
            result = run_consumer("sarchive-es", ["--es-url", es_url, "--index-prefix", prefix,
                                                  *batch_args(batch)],
                                  kafka, topic, expected=expected, workdir=workdir,
                                  sink_address=es_url)
            result.stored_bytes_per_event = {"index": index_bytes(es_url, prefix) / expected}
            return result
        finally:
            delete_es_indices(es_url, prefix)


def index_bytes(es_url: str, prefix: str) -> float:
    """Bytes of the primary shards of the prefix's indices, after a flush (what a year of
    them takes before replicas; merges go on and move it by some percent)."""
    client = es_client(es_url)
    client.indices.flush(index=f"{prefix}-*")
    stats = client.indices.stats(index=f"{prefix}-*", metric="store")
    return float(stats["_all"]["primaries"]["store"]["size_in_bytes"])


def delete_es_indices(es_url: str, prefix: str) -> None:
    delete_es_prefix(es_client(es_url), prefix)


def relabelled(records: Sequence[Record], first_job_id: int) -> list[Record]:
    """The same events as new jobs (ids from first_job_id): as many distinct jobs as a
    backlog test needs, with the producer's real payloads."""
    codec = JobEventCodec()
    headers = tuple(message_headers(codec))
    fresh: list[Record] = []
    for offset, original in enumerate(decode_all(records)):
        job_id = str(first_job_id + offset)
        event = replace(original, job_id=job_id, job_key=make_job_key(
            original.cluster, original.scheduler, job_id, original.submit_time))
        fresh.append(Record(message_key(event.job_key), codec.encode(event), headers, 0))
    return fresh


class PacedFeeder(threading.Thread):
    """Produces records at a steady rate in the background, as a producer would."""

    def __init__(self, kafka: str, topic: str, records: Sequence[Record], rate: float) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.records = records
        self.rate = rate
        self.producer = Producer(quiet(producer_properties(kafka, topic)))
        self.acks = Acks(pending=len(records))
        self.sent = 0
        self.started_at = 0.0
        self.stop_requested = threading.Event()

    def run(self) -> None:
        self.started_at = time.monotonic()
        for index, record in enumerate(self.records):
            if self.stop_requested.is_set():
                break
            delay = self.started_at + index / self.rate - time.monotonic()
            if delay > 0:
                self.producer.poll(delay)
            produce_one(self.producer, self.topic, record, self.acks)
            self.sent += 1
        self.producer.flush(60)

    def stop(self) -> None:
        self.stop_requested.set()
        self.join(120)


def es_backlog_drain(kafka: str, topic: str, records: Sequence[Record], es_url: str, *,
                     rate: float, build_seconds: float,
                     batch: int | None = None) -> dict[str, float]:
    """Jobs arrive at `rate`/s throughout. With the consumer stopped for build_seconds a
    backlog builds; then the consumer runs while jobs keep arriving, until it has caught up.
    The ratio is how much faster the backlog went than it came: the speed at which it
    shrank while jobs kept arriving, from the consumer's first commit until it caught up (or
    the feed ran out), over the speed it grew at (`rate`, with the consumer off). Below 1 it
    drains slower than it builds; below 0 it still grows."""
    needed = int(rate * build_seconds * 4)
    feed = relabelled(list(records) * (needed // len(records) + 1), 10**7)[:needed]
    prefix = unique_name("drain").replace(".", "-")
    feeder = PacedFeeder(kafka, topic, feed, rate)
    group = unique_name("sarchive-es")
    try:
        with scratch("drain") as workdir:
            feeder.start()
            time.sleep(build_seconds)  # the scenario: jobs arrive with no consumer running
            service = Service("sarchive-es", [
                str(VENV_BIN / "sarchive-es"), "--brokers", kafka, "--topic", topic,
                "--group", group, "--es-url", es_url, "--index-prefix", prefix,
                *batch_args(batch),
                "--log-file", str(workdir / "sarchive-es.log")], workdir / "sarchive-es.out")
            with service:
                first = wait_committed(kafka, group, topic, 1, timeout=120,
                                       alive=service.alive)[-1]
                backlog = feeder.sent - first[1]
                end, remaining = _wait_caught_up(kafka, group, topic, feeder, service)
    finally:
        feeder.stop()
        delete_es_indices(es_url, prefix)
    drain_seconds = end - first[0]
    return {"backlog": float(backlog), "remaining": float(remaining),
            "drain_seconds": drain_seconds,
            "ratio": (backlog - remaining) / drain_seconds / rate}


def _wait_caught_up(kafka: str, group: str, topic: str, feeder: PacedFeeder,
                    service: Service) -> tuple[float, int]:
    """When the group's commits reached what had been produced by then, or else when the
    feed ran out (the consumer drains slower than jobs arrive); and what was left."""
    outcome: list[tuple[float, int]] = []

    def caught_up() -> bool:
        produced = feeder.sent
        if not feeder.is_alive() and produced < len(feeder.records):
            raise BenchError("the feeder stopped early")
        committed = committed_total(kafka, group, topic)
        if committed >= produced or produced >= len(feeder.records):
            outcome.append((time.time(), max(0, produced - committed)))
            return True
        service.require_alive()
        return False

    wait_until(caught_up, 600, "the ES consumer caught up or the feed ran out")
    return outcome[0]


# --------------------------------------------------------------------------- spool to archive


ARCHIVED_NAME = re.compile(r"^job\.(\d+)_")


def archived_times(archive: Path) -> dict[int, float]:
    """Per job id, when its last file got its final name in the archive (the largest ctime:
    link(2) and the temporary name's unlink set it, just before the directory fsync).
    Matches sarchive-archive's default layout and the Rust sarchive's, both job.<id>_<file>."""
    times: dict[int, float] = {}
    for directory, _, names in os.walk(archive):
        for name in names:
            match = ARCHIVED_NAME.match(name)
            if match is None:
                continue
            job_id = int(match.group(1))
            changed = os.stat(os.path.join(directory, name)).st_ctime
            times[job_id] = max(times.get(job_id, 0.0), changed)
    return times


def spool_to_archive(kafka: str, topic: str, jobs: Sequence[spoolgen.SpoolJob],
                     rate: float | None, seed: int, *,
                     batch: int | None = None) -> dict[str, float]:
    """Our whole file path: spool -> producer -> Kafka -> sarchive-archive -> file, both
    services running, jobs written at `rate` (None: a burst). Measured like the prior art:
    throughput from the first write to the last archived file, latency from each script's
    close to its job's last archived file."""
    with scratch("pipeline") as workdir:
        archive = workdir / "archive"
        archive.mkdir()
        group = unique_name("sarchive-archive")
        consumer = Service("sarchive-archive", [
            str(VENV_BIN / "sarchive-archive"), "--brokers", kafka, "--topic", topic,
            "--group", group, "--archive", str(archive), *batch_args(batch),
            "--log-file", str(workdir / "sarchive-archive.log")],
            workdir / "sarchive-archive.out")
        with ProducerProcess(workdir, kafka, topic) as producer, consumer:
            warm_up(producer, seed)
            wait_committed(kafka, group, topic, WARM_UP_JOBS, timeout=120, alive=consumer.alive)
            meter = producer_meter(producer, kafka, archive=consumer.main_pid)
            writer = spoolgen.SlurmSpoolWriter(producer.spool,
                                               "vectored" if rate is None else "slurmctld")
            meter.start()
            run = spoolgen.write_paced(writer.write, jobs, rate)
            wait_committed(kafka, group, topic, WARM_UP_JOBS + len(jobs), timeout=600,
                           alive=consumer.alive)
            meter.stop()
        archived = {j: t for j, t in archived_times(archive).items() if j in run.closed_at}
    latencies = [(archived[j] - closed) * 1000 for j, closed in run.closed_at.items()
                 if j in archived]
    return {"jobs": float(len(jobs)), "lost": float(len(jobs) - len(archived)),
            "write_rate": run.rate,
            "throughput": len(archived) / (max(archived.values()) - run.started),
            **{f"cpu.{name}_us": us for name, us in meter.per_job_us(len(jobs)).items()},
            **latency_summary(latencies)}
