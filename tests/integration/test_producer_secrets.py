"""With its default settings, the producer lets no secret of a job's environment leave the
scheduler host, and keeps none in its outbox on that host.

The spool is synthetic (tests/conftest.py writes it the way slurmctld does); the producer is
the real subprocess and the broker the real Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.secrets import LEAKED as LEAKED_IN_ENVIRONMENTS

UNREACHABLE_BROKER = "127.0.0.1:9"
SCRIPT = b"#!/bin/bash\n#SBATCH --job-name=leaky\necho leaky\n"

# The old defaults' leaks, and Slurm's own token (masked by its key and by its JWT shape).
LEAKED = (
    *LEAKED_IN_ENVIRONMENTS,
    (b"SLURM_JWT=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl", b"c2lnbmF0dXJl"),
)
ENVIRONMENT = (b"USER=alice", b"HOME=/home/alice", b"KEPT_MARKER=kept-in-the-clear",
               *(entry for entry, _ in LEAKED))
MASKED_URL = b"DATABASE_URL=postgres://user:<redacted>@host/db"


def producer_args(spool: Any, state_dir: Path, brokers: str) -> tuple[str, ...]:
    return ("--cluster", "synthetic", "--spool", str(spool.root), "--state-dir",
            str(state_dir), "--brokers", brokers)


def test_the_event_on_the_topic_carries_no_leaked_secret(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        synthetic_spool: Any, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
        producer_runner: Callable[..., Any], topic_reader: Callable[..., Any]) -> None:
    synthetic_spool.write_job(801, SCRIPT, ENVIRONMENT)
    producer_runner(*producer_args(synthetic_spool, tmp_path / "state", kafka_bootstrap),
                    "--topic", kafka_topic)
    reader = topic_reader(kafka_bootstrap, kafka_topic).read_until(
        lambda r: "801" in r.job_ids(), timeout=60)
    (message,) = reader.messages
    (event,) = reader.events
    for _, secret in LEAKED:
        assert secret not in message.value()
    assert b"kept-in-the-clear" in message.value()  # the check above can find what is there
    assert event.redacted_keys == ("SSHPASS", "MYSQL_PWD", "GITHUB_PAT", "AWS_ACCESS_KEY_ID",
                                   "DATABASE_URL", "NOTE", "SLURM_JWT")
    environment_file = next(f for f in event.spool_files if f.name == "environment")
    assert MASKED_URL + b"\0" in event.environment
    assert MASKED_URL + b"\0" in environment_file.content


def test_the_outbox_on_the_scheduler_host_holds_no_leaked_secret(
        synthetic_spool: Any, tmp_path: Path, producer_runner: Callable[..., Any]) -> None:
    """The broker is unreachable, so the event stays in the outbox files on disk."""
    synthetic_spool.write_job(802, SCRIPT, ENVIRONMENT)
    state_dir = tmp_path / "state"
    producer = producer_runner(*producer_args(synthetic_spool, state_dir, UNREACHABLE_BROKER))
    producer.wait_for_metric("sarchive_producer_outbox_events", lambda v: v == 1)
    producer.kill()
    stored = b"".join(path.read_bytes() for path in sorted((state_dir / "outbox").iterdir())
                      if path.is_file())
    for _, secret in LEAKED:
        assert secret not in stored
    assert b"kept-in-the-clear" in stored  # the check above can find what is there
    assert MASKED_URL in stored
