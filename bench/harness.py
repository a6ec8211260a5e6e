"""What every benchmark script shares: services, topics, processes, clocks and statistics.

Nothing here measures anything by itself; stages.py, baselines.py and prior_art.py do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.limits import MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# `python bench/run.py` puts bench/ on sys.path, not the repository root that holds testkit/
# (the helpers shared with the tests): every bench script imports this module first.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from testkit.processes import ServiceProcess  # noqa: E402 -- needs the root on sys.path, above
from testkit.waiting import wait_until  # noqa: E402 -- as above

VENV_BIN = REPO / ".venv" / "bin"
PROFILE_ENV = "SARCHIVE_BENCH_PROFILE"
TOPIC_PARTITIONS = 3


def bench_tmp() -> Path:
    """Scratch space on the repository's file system (where the services keep their data).

    Marked as a "top" directory for ext4's allocator (chattr +T: its subdirectories are
    spread over the file system's block groups) so that each stage's files land away from
    inodes that anything freed in the last minutes (see scratch()); elsewhere the flag is
    refused and changes nothing."""
    path = REPO / ".run" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chattr", "+T", str(path)], check=False, capture_output=True)
    return path


def bench_trash() -> Path:
    """Where finished scratch trees wait until the suite has measured everything."""
    return REPO / ".run" / "bench-trash"


@contextlib.contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """A fresh directory for one measurement, set aside (not deleted) afterwards.

    Deleting a stage's tens of thousands of files would slow every later stage: ext4 without
    a journal (this VM's) skips inodes freed in the last one to six minutes when it allocates
    new ones (`recently_deleted()` in fs/ext4/ialloc.c), so file creation after a big clean-up
    costs 5-40 times the CPU. A rename frees nothing; `empty_trash` deletes it all once the
    suite is done."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=bench_tmp()))
    try:
        yield workdir
    finally:
        trash = bench_trash()
        trash.mkdir(parents=True, exist_ok=True)
        workdir.rename(trash / workdir.name)


def empty_trash() -> None:
    shutil.rmtree(bench_trash(), ignore_errors=True)


# librdkafka logs every failed connection attempt: a broker restarted by someone else's test
# must not flood the benchmark's output. Errors that matter surface as exceptions.
QUIET_LOGGER = logging.getLogger("bench.librdkafka")
QUIET_LOGGER.addHandler(logging.NullHandler())
QUIET_LOGGER.propagate = False


def client_config(bootstrap: str, **properties: str) -> dict[str, Any]:
    """librdkafka properties for the benchmark's own clients (readers, admin, probes)."""
    return {"bootstrap.servers": bootstrap, "logger": QUIET_LOGGER, **properties}


class BenchError(Exception):
    """A benchmark could not run (service missing, process died, timeout): the run fails."""


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Services:
    kafka: str
    es_url: str | None
    slurm_conf: str | None
    slurm_state: Path | None


def discover_services(environ: Mapping[str, str] | None = None) -> Services:
    """Addresses of the local services: from the environment, else from `infra/services env`
    (which prints `export NAME=value` lines for the services that are up)."""
    env = dict(os.environ if environ is None else environ)
    if "SARCHIVE_KAFKA_BOOTSTRAP" not in env:
        result = subprocess.run([str(REPO / "infra" / "services"), "env"],
                                capture_output=True, text=True, timeout=60, check=False)
        for name, value in re.findall(r"^export (\w+)=(.*)$", result.stdout, re.MULTILINE):
            env.setdefault(name, value.strip("'\""))
    if "SARCHIVE_KAFKA_BOOTSTRAP" not in env:
        raise BenchError("no Kafka broker: run `make services-up` (or infra/services up kafka)")
    state = env.get("SARCHIVE_SLURM_STATE")
    return Services(kafka=env["SARCHIVE_KAFKA_BOOTSTRAP"], es_url=env.get("SARCHIVE_ES_URL"),
                    slurm_conf=env.get("SLURM_CONF"), slurm_state=Path(state) if state else None)


# --------------------------------------------------------------------------- Kafka topics


def unique_name(kind: str) -> str:
    return f"bench.{kind}.{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, name: str, *, log_append_time: bool = True,
                 partitions: int = TOPIC_PARTITIONS) -> str:
    """A fresh topic like the project's: 3 partitions unless told. With log_append_time every
    message carries the broker's clock at append, which is how latency to the acknowledgement
    is read back (the broker appends, then acknowledges)."""
    admin = AdminClient(client_config(bootstrap))
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    if log_append_time:
        config["message.timestamp.type"] = "LogAppendTime"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                  config=config)])[name].result(timeout=30)

    def led() -> bool:
        meta = admin.list_topics(name, timeout=10).topics.get(name)
        return meta is not None and meta.error is None \
            and len(meta.partitions) == partitions \
            and all(p.leader >= 0 for p in meta.partitions.values())

    wait_until(led, 30, f"topic {name} has a leader for every partition", interval=0.1)
    return name


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Best effort: benchmark topics hold hundreds of MB and must not pile up."""
    if not names:
        return
    admin = AdminClient(client_config(bootstrap))
    for future in admin.delete_topics(list(names)).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=30)


@contextlib.contextmanager
def fresh_topics(bootstrap: str) -> Iterator[Callable[..., str]]:
    """`new(kind)` creates a topic (`new(kind, partitions)`: with that many partitions); every
    topic created is deleted on the way out."""
    created: list[str] = []

    def new(kind: str, partitions: int = TOPIC_PARTITIONS) -> str:
        created.append(create_topic(bootstrap, unique_name(kind), partitions=partitions))
        return created[-1]

    try:
        yield new
    finally:
        delete_topics(bootstrap, [*created, *(f"{t}.dlq" for t in created)])


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float) -> list[Record]:
    """Every message of the topic, reading until `expected` arrived or `timeout` passed."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": unique_name("reader"), "auto.offset.reset": "earliest",
        "enable.auto.commit": "false", "fetch.max.bytes": str(4 * MAX_MESSAGE_BYTES),
        "max.partition.fetch.bytes": str(MAX_MESSAGE_BYTES),
        "receive.message.max.bytes": str(4 * MAX_RESPONSE_BYTES)}))
    records: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions_of(consumer, topic)])
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                # A consumed message's headers are (str, bytes) pairs; the stubs' type is the
                # union a producer accepts.
                headers = tuple(message.headers() or ())
                records.append(Record(message.key() or b"", message.value() or b"",
                                      headers,  # type: ignore[arg-type]  # see above
                                      message.timestamp()[1]))
    finally:
        consumer.close()
    return records


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Messages of `topic` the consumer group has committed (its durable progress)."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": group}))
    try:
        return _committed(consumer, topic) or 0
    finally:
        consumer.close()


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """The topic's partition numbers, from the broker's metadata."""
    meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise BenchError(f"topic {topic} has no partitions: {meta.error if meta else 'gone'}")
    return sorted(meta.partitions)


def _committed(consumer: Consumer, topic: str, partitions: Sequence[int] | None = None
               ) -> int | None:
    """None while the group coordinator cannot answer (moving, or the broker restarting):
    the caller simply asks again."""
    try:
        numbers = partitions if partitions is not None else partitions_of(consumer, topic)
        request = [TopicPartition(topic, p) for p in numbers]
        return sum(max(tp.offset, 0) for tp in consumer.committed(request, timeout=10))
    except KafkaException:
        return None


def wait_committed(bootstrap: str, group: str, topic: str, target: int, *, timeout: float,
                   alive: Callable[[], bool] = lambda: True,
                   interval: float = 0.05) -> list[tuple[float, int]]:
    """Poll the group's committed offsets until `target`; the (time, committed) timeline."""
    timeline: list[tuple[float, int]] = []
    consumer = Consumer(client_config(bootstrap, **{"group.id": group}))
    deadline = time.monotonic() + timeout
    try:
        partitions = partitions_of(consumer, topic)
        while time.monotonic() < deadline:
            done = _committed(consumer, topic, partitions)
            if done is None:
                time.sleep(interval)
                continue
            if not timeline or done != timeline[-1][1]:
                timeline.append((time.time(), done))
            if done >= target:
                return timeline
            if not alive():
                raise BenchError(f"the consumer of group {group} exited with {done} of"
                                 f" {target} committed")
            time.sleep(interval)
    finally:
        consumer.close()
    raise BenchError(f"group {group} committed {timeline[-1][1] if timeline else 0} of"
                     f" {target} in {timeout:.0f} s")


def progress_rate(timeline: Sequence[tuple[float, int]]) -> float:
    """Messages/s between the first commit seen and the last: start-up and group join, which
    have nothing to do with the throughput, are left out."""
    moving = [(t, n) for t, n in timeline if n > 0]
    if len(moving) < 2:
        return float("nan")
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def batch_ends(timeline: Sequence[tuple[float, int]],
               gap: float = 0.002) -> list[tuple[float, int]]:
    """The last sample of each burst: per-item progress reported together (one response
    for a whole batch) becomes one sample per batch, as commits are."""
    return [sample for sample, following in zip(timeline, [*timeline[1:], None], strict=True)
            if following is None or following[0] - sample[0] > gap]


# --------------------------------------------------------------------------- processes


def proc_status_kib(pid: int, field_name: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS: resident now; VmHWM: peak resident);
    0 for a process that has exited meanwhile: gone, or exiting or a zombie (its memory
    released, its status has no Vm fields)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return 0 if match is None else int(match.group(1))


def process_tree(pid: int) -> list[int]:
    """The process and its children, as of now: a thread or child that ends while they are
    listed is left out, never an error."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return [pid]
    children: list[int] = []
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended after the listing
        children += map(int, text.split())
    return [pid, *children]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, all its threads (utime and
    stime of /proc/<pid>/stat, fields 14 and 15); 0 for a process that is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_idle_seconds() -> float:
    """Idle (and I/O-wait) CPU seconds of the whole machine since boot, all cores."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / CLOCK_TICKS


def listening_pid(port: int) -> int | None:
    """The process listening on this TCP port of this machine (the shared broker, the
    Elasticsearch node): its socket's inode from /proc/net/tcp*, then the process holding
    that inode among its descriptors. None when nothing visible listens there."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
    return None


def port_of(address: str) -> int:
    """The port of `host:port`, of the first of a bootstrap list or of a URL."""
    return int(address.split(",", maxsplit=1)[0].rstrip("/").rsplit(":", 1)[1])


def broker_topic_bytes(bootstrap: str, topic: str) -> float:
    """Bytes the topic's log segments take on the broker listening at `bootstrap` (this
    machine's), read from its log directories (log.dirs of the .properties file on its
    command line); NaN where they cannot be found."""
    pid = listening_pid(port_of(bootstrap))
    if pid is None:
        return math.nan
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    properties = [Path(a) for a in arguments if a.endswith(".properties") and Path(a).exists()]
    directories: list[Path] = []
    for path in properties:
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in ("log.dirs", "log.dir"):
                directories += [Path(d.strip()) for d in value.split(",") if d.strip()]
    segments = [f for d in directories for f in d.glob(f"{glob_escape(topic)}-*/*.log")]
    return float(sum(f.stat().st_size for f in segments)) if segments else math.nan


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes of content, bytes of disk blocks) of the regular files below root."""
    content = blocks = 0
    for directory, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            content += info.st_size
            blocks += info.st_blocks * 512
    return content, blocks


@dataclass
class CpuMeter:
    """CPU seconds per named process between start() and stop(): `processes` maps a name
    to a function giving the pids it stands for now (a service's readers come and go)."""

    processes: Mapping[str, Callable[[], Sequence[int]]]
    _start: dict[str, dict[int, float]] | None = None
    used: dict[str, float] | None = None

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in pids()}
                for name, pids in self.processes.items()}

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds each name used since start(); a process started meanwhile counts
        from 0, one gone meanwhile is left out (its time is lost with it)."""
        if self._start is None:
            raise BenchError("CpuMeter.stop() before start()")
        end = self._sample()
        # A name with no process at either end (a listener not found) is not measured: NaN.
        self.used = {name: (sum(cpu - self._start[name].get(pid, 0.0)
                                for pid, cpu in end[name].items())
                            if end[name] or self._start[name] else math.nan)
                     for name in end}
        return self.used

    def per_job_us(self, jobs: int) -> dict[str, float]:
        """Microseconds of CPU per job for each name (NaN before stop() or without jobs)."""
        if self.used is None or jobs <= 0:
            return {name: math.nan for name in self.processes}
        return {name: seconds / jobs * 1e6 for name, seconds in self.used.items()}


def listener(address: str) -> Callable[[], list[int]]:
    """The pids function of a CpuMeter for the process listening at `address` (none found,
    e.g. a broker of another machine: its figure is NaN)."""
    port = port_of(address)
    found = listening_pid(port)
    return lambda: [found] if found is not None else []


@dataclass
class Service(ServiceProcess):
    """A service under test, run as the real console script in its own process, from the
    repository root; a bench run fails (BenchError) as soon as it has died."""

    cwd: Path | None = REPO

    def __post_init__(self) -> None:
        # SARCHIVE_BENCH_PROFILE=<dir>: each of our services runs under cProfile, its profile
        # written to <dir>/<script>-<n>.prof when it stops (SIGTERM ends it normally).
        # Reader processes are spawned and not profiled (profile producer.read_outcomes
        # in-process for them).
        profiles = os.environ.get(PROFILE_ENV)
        script = Path(self.argv[0])
        if profiles and script.parent == VENV_BIN:
            directory = Path(profiles)
            directory.mkdir(parents=True, exist_ok=True)
            output = Path(tempfile.mkstemp(prefix=f"{script.name}-", suffix=".prof",
                                           dir=directory)[1])
            self.argv = [sys.executable, "-m", "cProfile", "-o", str(output), *self.argv]

    def require_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited ({self.returncode()}); {self.log_tail()}")

    def rss_mb(self) -> float:
        """Resident memory of the service and its child processes (the producer's readers)."""
        return sum(proc_status_kib(pid, "VmRSS") for pid in self.pids()) / 1024

    def peak_rss_mb(self) -> float:
        """Sum of each process's peak resident memory: at least the peak of the whole."""
        return sum(proc_status_kib(pid, "VmHWM") for pid in self.pids()) / 1024

    def pids(self) -> list[int]:
        """The service's process and its children."""
        return process_tree(self.pid)

    def main_pid(self) -> list[int]:
        """The service's own process alone (a CpuMeter's pids function)."""
        return [self.pid] if self.alive() else []

    def child_pids(self) -> list[int]:
        """Its child processes alone: the producer's readers."""
        return process_tree(self.pid)[1:] if self.alive() else []


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Median of repeated runs with the spread (min and max) shown beside it."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        finite = [v for v in values if not math.isnan(v)]  # NaN: a run that could not measure
        if not finite:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.runs}


def dump_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    temporary.replace(path)
