"""sarchive-producer against the real Slurm and Kafka: bursts, catch-up, outages, SIGKILL.

The producer runs as a real subprocess with its own state directory; a real consumer reads the
topic back and decodes every event. Jobs are submitted --hold so they stay in the spool, and
are cancelled at the end of each test.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.deliveries import delivered_once

HELD = "--hold"
# Directives, a bare CR and trailing blank lines, bytes that are not UTF-8 (sbatch itself
# refuses CRLF line ends); --wrap jobs carry a multi-line and an '='-holding variable.
SCRIPTS = [
    b"#!/bin/bash\n#SBATCH --job-name=plain\n#SBATCH --time=00:01:00\necho hello\n",
    b"#!/bin/bash\n#SBATCH --ntasks=2\necho 'a\rb' with a bare CR\n\n\n",
    b"#!/bin/bash\n# caf\xe9 in Latin-1, \xff\xfe not UTF-8\necho bytes\n",
]


class Submitter:
    """Submits held jobs through the fixture's sbatch and cancels all of them at the end."""

    def __init__(self, slurm: Any) -> None:
        self.slurm = slurm
        self.job_ids: list[str] = []

    def job(self, n: int) -> str:
        if n % 4 == 3:
            job_id = self.slurm.sbatch(
                HELD,
                f"--job-name=wrap{n}",
                "--wrap",
                f"echo {n}",
                env={"MULTILINE": "a\nb", "EQUALS": "x=y=z"},
            )
        else:
            job_id = self.slurm.sbatch(HELD, script=SCRIPTS[n % 3] + b"# %d\n" % n)
        self.job_ids.append(job_id)
        return str(job_id)

    def array(self, size: int) -> str:
        job_id = self.slurm.sbatch(HELD, f"--array=1-{size}", script=SCRIPTS[0])
        self.job_ids.append(job_id)
        return str(job_id)

    def heterogeneous(self) -> set[str]:
        """A heterogeneous job: slurmctld keeps one directory per component (ids N, N+1)."""
        job_id = self.slurm.sbatch(HELD, script=b"#!/bin/bash\n#SBATCH --ntasks=1\n"
                                   b"#SBATCH hetjob\n#SBATCH --ntasks=1\nsrun hostname\n")
        self.job_ids.append(job_id)
        return {job_id, str(int(job_id) + 1)}

    def cancel_all(self) -> None:
        for start in range(0, len(self.job_ids), 200):
            self.slurm.scancel(",".join(self.job_ids[start : start + 200]))


@pytest.fixture
def submitter(slurm: Any) -> Iterator[Submitter]:
    submitter = Submitter(slurm)
    yield submitter
    submitter.cancel_all()


@dataclass(frozen=True)
class Rig:
    """One test's producer set-up: real Slurm, a fresh topic, a state directory."""

    slurm: Any
    bootstrap: str
    topic: str
    state_dir: Path
    runner: Callable[..., Any]
    reader: Callable[..., Any]

    def start_producer(self, *extra: str) -> Any:
        return self.runner("--cluster", self.slurm.cluster, "--spool", str(self.slurm.state_dir),
                           "--state-dir", str(self.state_dir), "--brokers", self.bootstrap,
                           "--topic", self.topic, "--env-redact", "", "--env-redact-values", "",
                           *extra)

    def read_until(self, job_ids: set[str], timeout: float) -> Any:
        return self.reader(self.bootstrap, self.topic).read_until(
            lambda r: job_ids <= r.job_ids(), timeout=timeout)


@pytest.fixture
def rig(slurm: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> Rig:
    return Rig(slurm, kafka_bootstrap, kafka_topic, tmp_path / "state", producer_runner,
               topic_reader)


def assert_exactly_as_stored(event: Any, slurm: Any) -> None:
    job_dir = slurm.job_dir(event.job_id)
    script = (job_dir / "script").read_bytes()
    environment = (job_dir / "environment").read_bytes()
    assert event.script == script[:-1] and script.endswith(b"\0"), event.job_id
    assert event.environment == environment[4:], event.job_id
    assert {f.name: f.content for f in event.spool_files} == {
        "script": script,
        "environment": environment,
    }, event.job_id
    assert event.submit_time == (job_dir / "script").stat().st_mtime_ns // 1_000_000


def test_burst_of_500_sbatch_jobs_all_arrive_once_exactly_as_slurm_stored_them(
        rig: Rig, submitter: Submitter) -> None:
    producer = rig.start_producer()
    producer.wait_for_log("watching slurm spool")
    started = time.monotonic()
    singles = [submitter.job(n) for n in range(490)]
    arrays = [submitter.array(size) for size in (100, 50, 10, 5, 2) * 2]
    submitted = set(singles + arrays)
    submit_seconds = time.monotonic() - started
    assert len(submitted) == 500, "500 spool directories: 490 jobs and 10 arrays"

    reader = rig.read_until(submitted, timeout=120)
    delivered_seconds = time.monotonic() - started
    by_id = delivered_once(reader.events, submitted)
    for event in by_id.values():
        assert_exactly_as_stored(event, rig.slurm)
    wrapped = by_id[singles[3]]
    assert dict(wrapped.environment_entries())["MULTILINE"] == "a\nb"
    assert dict(wrapped.environment_entries())["EQUALS"] == "x=y=z"
    print(f"\nburst: 500 spool dirs submitted in {submit_seconds:.1f} s, all delivered"
          f" {delivered_seconds:.1f} s after the first sbatch")


def test_jobs_submitted_before_the_producer_starts_are_caught_up_and_not_repeated(
        rig: Rig, submitter: Submitter) -> None:
    submitted = ({submitter.job(n) for n in range(20)} | {submitter.array(3)}
                 | submitter.heterogeneous())
    first = rig.start_producer()
    reader = rig.read_until(submitted, timeout=60)
    assert submitted <= reader.job_ids()
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0

    second = rig.start_producer()
    second.wait_for_log("watching slurm spool")
    later = submitter.job(100)
    reader.read_until(lambda r: later in r.job_ids(), timeout=60)
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    # One INFO line per acknowledged job: the restart published the new job and nothing that
    # the first run had acknowledged (the shared spool holds many more jobs than ours).
    archived = [line for line in second.log().splitlines() if " archived: " in line]
    assert len(archived) == 1 and f"job {later} archived" in archived[0], archived[:5]


def test_broker_down_producer_sigkilled_and_restarted_then_broker_back_every_job_arrives(
        rig: Rig, kafka_service: Any, submitter: Submitter) -> None:
    outbox_events = "sarchive_producer_outbox_events"
    producer = rig.start_producer("--retry-interval", "1")
    producer.wait_for_log("watching slurm spool")
    # Let the catch-up of whatever is in the shared spool finish, so the outbox holds ours only.
    producer.wait_for_metric(outbox_events, lambda v: v == 0, timeout=60)
    submitted: set[str] = set()
    try:
        kafka_service.stop()
        submitted |= {submitter.job(n) for n in range(30)} | {submitter.array(4)}
        producer.wait_for_metric(outbox_events, lambda v: v >= len(submitted))
        producer.kill()  # SIGKILL, with every event in the outbox and none acknowledged

        restarted = rig.start_producer("--retry-interval", "1")
        restarted.wait_for_log("replaying")
        submitted |= {submitter.job(n) for n in range(30, 40)}
        restarted.wait_for_metric(outbox_events, lambda v: v >= len(submitted))
        assert restarted.metric("sarchive_producer_jobs_published_total") == 0
    finally:
        if not kafka_service.is_up():
            kafka_service.start()
    reader = rig.read_until(submitted, timeout=180)
    missing = submitted - reader.job_ids()
    assert not missing, f"lost across the outage and the SIGKILL: {sorted(missing)}"
    restarted.wait_for_metric(outbox_events, lambda v: v == 0, timeout=60)
    for event in reader.events:
        if event.job_id in submitted:
            assert_exactly_as_stored(event, rig.slurm)
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(30) == 0
