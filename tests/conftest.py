"""Helpers shared by unit and integration tests.

synthetic_spool: a Slurm StateSaveLocation written by the test exactly the way slurmctld
22.05 writes one (testkit/spool.py), for tests of how the producer handles the spool rather
than of Slurm itself.

gridengine_spool: a Grid Engine qmaster spool written by the test the way sge_qmaster 8.1
writes its classic spool (job_scripts/<id> in one write; the record renamed into
jobs/00/0000/0011 from `.0011`, an array job's as `common` in a directory of that name), with
whatever record bytes the test gives.

scripted_inotify: real inotify, plus what the kernel does under pressure on demand: drop
events and queue IN_Q_OVERFLOW, or refuse watches with ENOSPC (the max_user_watches limit) or
another errno (EACCES: a directory not readable yet, which root cannot otherwise meet).
It is the seam the producer's watcher takes its inotify from.

producer_runner / topic_reader: `sarchive-producer` as a real subprocess, and a real Kafka
consumer decoding what it produced.

In CI (CI=true) a test that skips itself for want of a capability (root, mount, a sysctl)
fails instead: a green CI run proves every behaviour, never a silent skip.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from hypothesis import settings
from inotify_simple import Event, INotify, flags

from schemas.codec import JobEventCodec
from schemas.limits import MAX_MESSAGE_BYTES, MAX_RESPONSE_BYTES
from testkit.processes import ServiceProcess, free_port
from testkit.spool import SyntheticGridEngineSpool, SyntheticSlurmSpool

# Hypothesis: examples write and fsync files, so their duration is the disk's, not the code's:
# no deadline. CI (CI=true) runs the same examples every time (derandomize), so that a red run
# is red again on a re-run; a developer's run explores new ones. HYPOTHESIS_PROFILE overrides.
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI") == "true" else "dev"))

# A parametrization over nothing (no second schema version yet) is structure, not a missing
# capability: it stays a skip.
_STRUCTURAL_SKIP = "got empty parameter set"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("CI") == "true" and report.skipped
            and _STRUCTURAL_SKIP not in str(report.longrepr)):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every capability must be present: " \
                          f"{report.longrepr}"


Mount = Callable[[Path, str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """`tmpfs(directory, options)` mounts a tmpfs there (say size=1m: a real ENOSPC; remounted
    ro: a real EROFS); everything mounted is unmounted after the test. Needs root and mount."""
    mounted: list[Path] = []

    def mount(directory: Path, options: str) -> Path:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                                capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(directory)
        return directory
    yield mount
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.fixture
def synthetic_spool(tmp_path: Path) -> SyntheticSlurmSpool:
    root = tmp_path / "statesave"
    root.mkdir()
    return SyntheticSlurmSpool(root)


@pytest.fixture
def gridengine_spool(tmp_path: Path) -> SyntheticGridEngineSpool:
    root = tmp_path / "qmaster"
    (root / "jobs").mkdir(parents=True)
    (root / "job_scripts").mkdir()
    return SyntheticGridEngineSpool(root)


class ScriptedInotify:
    def __init__(self) -> None:
        self.real = INotify()
        self.overflow_pending = False
        self.dropping = False
        self.refuse_watches_under: Path | None = None
        self.refusal = errno.ENOSPC

    def drop_events(self) -> None:
        """From now on events are lost, as when the kernel's queue is full."""
        self.dropping = True

    def overflow(self) -> None:
        """Stop dropping; the next read returns IN_Q_OVERFLOW, as the kernel queues it."""
        self.dropping = False
        self.overflow_pending = True

    def add_watch(self, path: str, mask: int) -> int:
        if self.refuse_watches_under is not None and Path(path).is_relative_to(
                self.refuse_watches_under):
            raise OSError(self.refusal, os.strerror(self.refusal))
        return int(self.real.add_watch(path, mask))

    def rm_watch(self, wd: int) -> None:
        self.real.rm_watch(wd)

    def read(self, timeout: int | None = None) -> list[Any]:
        events = [] if self.dropping else list(self.real.read(timeout=timeout))
        if self.dropping:
            self.real.read(timeout=0)  # consumed and thrown away
        if self.overflow_pending:
            self.overflow_pending = False
            events.append(Event(-1, flags.Q_OVERFLOW, 0, ""))
        return events

    def queued(self) -> bool:
        """Whether the kernel holds events not read yet."""
        return bool(select.select([self.real.fileno()], [], [], 0)[0])

    def fileno(self) -> int:
        return int(self.real.fileno())

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def scripted_inotify() -> Callable[[], ScriptedInotify]:
    """A factory the watcher calls once; the test keeps the instance it returned."""
    made: list[ScriptedInotify] = []

    def factory() -> ScriptedInotify:
        if not made:
            made.append(ScriptedInotify())
        return made[0]
    return factory


# --------------------------------------------------------------------------- producer runs

REPO = Path(__file__).resolve().parents[1]
PRODUCER_BIN = REPO / ".venv" / "bin" / "sarchive-producer"


def producer_process(argv: Sequence[str], log_path: Path, wrapper: Sequence[str] = (),
                     env: Mapping[str, str] | None = None) -> ServiceProcess:
    """`sarchive-producer` as a real subprocess (not started yet), its log in a file the test
    can read and its /metrics on a port of its own; env is layered over the test's."""
    port = free_port()
    return ServiceProcess("sarchive-producer", [
        *wrapper, str(PRODUCER_BIN), "--metrics-address", "127.0.0.1",
        "--metrics-port", str(port), *argv], log_path, env=dict(env or {}), metrics_port=port)


@pytest.fixture
def producer_runner(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start producers with `runner(*argv, wrapper=(), env=None)`, the wrapper a command prefix
    such as setpriv, env variables added to the test's; those still running are killed at
    teardown."""
    started: list[ServiceProcess] = []

    def run(*argv: str, wrapper: Sequence[str] = (),
            env: Mapping[str, str] | None = None) -> ServiceProcess:
        process = producer_process(argv, tmp_path / f"producer-{len(started)}.log", wrapper, env)
        started.append(process.start())
        return process
    yield run
    for process in started:
        process.kill()


class TopicReader:
    """Reads a topic from the beginning with a real consumer; decodes every job event."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.codec = JobEventCodec()
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False,
                                  # several of the largest messages per fetch
                                  "fetch.max.bytes": 4 * MAX_MESSAGE_BYTES,
                                  "receive.message.max.bytes": 4 * MAX_RESPONSE_BYTES})
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in metadata.partitions])
        self.messages: list[Any] = []
        self.events: list[Any] = []

    def read_until(self, done: Callable[[TopicReader], bool], timeout: float) -> TopicReader:
        deadline = time.monotonic() + timeout
        while not done(self) and time.monotonic() < deadline:
            for message in self.consumer.consume(1000, timeout=0.2):
                if message.error() is not None:
                    continue
                value = message.value()
                assert value is not None, "a job event without a value"
                self.messages.append(message)
                self.events.append(self.codec.decode(value))
        return self

    def job_ids(self) -> set[str]:
        return {event.job_id for event in self.events}

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_reader() -> Iterator[Callable[[str, str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(bootstrap: str, topic: str) -> TopicReader:
        readers.append(TopicReader(bootstrap, topic))
        return readers[-1]
    yield make
    for reader in readers:
        reader.close()
