"""Operating a consumer: a broker that cannot be reached fills neither the log nor hides in
it (repeated client errors logged once a minute, all of them counted), a consumer restarted
after a crash gets its partitions back at once (static group membership), and logrotate's
SIGHUP reopens the log file safely."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.model import JobEvent

MakeEvent = Callable[..., JobEvent]
Harness = Any  # the harness type lives in conftest.py, which test modules cannot import

UNREACHABLE = "127.0.0.1:9"  # discard: nothing listens, every connection is refused
# The session timeout of the default (45 s) a crashed dynamic member held its partitions for.
DEFAULT_SESSION_TIMEOUT_MS = 45_000
ROTATIONS = 200


def test_an_unreachable_broker_is_counted_every_time_and_logged_once_per_message(
        archive_runner: Harness) -> None:
    """Points a consumer at a port nothing listens on (the shared broker stays up)."""
    process = archive_runner.start(metrics=True, brokers=UNREACHABLE)

    def transport_errors() -> float:
        return process.metric("sarchive_consumer_kafka_client_errors_total",
                              {"service": "sarchive-archive", "kind": "transport"}) or 0

    assert process.wait_for_metric("sarchive_consumer_kafka_client_errors_total",
                                   lambda value: value == 0,
                                   {"service": "sarchive-archive", "kind": "other"}) == 0
    process.wait_until(lambda: transport_errors() >= 20, 60,
                       "the consumer has counted 20 refused connections")
    client_lines = [line for line in process.log().splitlines()
                    if "consumers.librdkafka" in line]
    refused = transport_errors()
    assert process.stop() == 0
    print(f"\n{refused:.0f} refused connections counted, {len(client_lines)} client log lines")
    # Without the repeat filter: a librdkafka line and an error line per refused connection.
    assert 1 <= len(client_lines) <= 4, "\n".join(client_lines)


def test_a_consumer_killed_mid_stream_and_restarted_consumes_again_within_seconds(
        archive_runner: Harness, make_slurm_event: MakeEvent) -> None:
    """Static membership: the restarted consumer is the same member (group.instance.id), so
    it does not wait for the dead one's session timeout (45 s by default, kept here)."""
    runner = archive_runner
    session = f"session.timeout.ms={DEFAULT_SESSION_TIMEOUT_MS}"
    first = [make_slurm_event(n) for n in range(300)]
    runner.produce(first)
    crashed = runner.start("--kafka-property", session, "--batch-max-messages", "20",
                           instance_id="archive-host1")
    crashed.wait_until(lambda: len(runner.archived()) >= 40, 60,
                       "the first consumer is archiving")
    crashed.kill()  # SIGKILL mid-stream: no commit of the batch in hand, no goodbye

    later = [make_slurm_event(n) for n in range(300, 310)]
    runner.produce(later)
    restarted_at = time.monotonic()
    restarted = runner.start("--kafka-property", session, instance_id="archive-host1")
    expected: dict[str, bytes] = {}
    for event in later:
        expected.update(runner.expected_files(event))
    restarted.wait_until(lambda: expected.items() <= runner.archived().items(), 60,
                         "the restarted consumer archives the events produced meanwhile")
    recovery = time.monotonic() - restarted_at
    print(f"\nrestarted consumer consumed again {recovery:.1f} s after its restart")
    assert recovery < 15, f"{recovery:.1f} s: as long as waiting for the session timeout"
    runner.wait_committed_to_end()
    assert restarted.stop() == 0


def test_log_rotations_with_sighup_during_heavy_logging_keep_the_consumer_writing_whole_lines(
        archive_runner: Harness, tmp_path: Path) -> None:
    """The consumer logs a line per poison message it dead-letters (20,000 of them); 200
    rotations (rename, SIGHUP; most while it writes) reopen the file each time, never inside a write
    (`reentrant call`), and no line is lost."""
    poison = 20_000
    archive_runner.produce_raw([(b"k%d" % n, b"poison") for n in range(poison)])
    log_file = tmp_path / "archive.log"
    process = archive_runner.start("--log-file", str(log_file))
    process.wait_until(lambda: log_file.exists() and "dead-lettering" in log_file.read_text(),
                       60, "the consumer dead-letters and logs")
    for number in range(ROTATIONS):
        process.wait_until(log_file.exists, 10, f"the log file is reopened after {number}",
                           interval=0.001)
        log_file.rename(tmp_path / f"archive.log.{number}")
        process.signal(signal.SIGHUP)
    process.wait_until(lambda: log_file.exists() and log_file.stat().st_size > 0, 10,
                       "the consumer writes to the new file after the last rotation")
    archive_runner.wait_committed_to_end()
    assert process.stop() == 0
    logs = [log_file, *tmp_path.glob("archive.log.*")]
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert "reentrant call" not in text
    assert "Traceback" not in text
    assert "stop requested" in log_file.read_text()
    assert text.count("log file reopened (SIGHUP)") >= 1
    assert text.count("dead-lettering ") == poison
