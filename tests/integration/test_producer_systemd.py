"""The producer under a service manager: the real `sarchive-producer` with $NOTIFY_SOCKET and
$WATCHDOG_USEC set, as systemd sets them for `Type=notify` and `WatchdogSec=`, and a datagram
socket bound by the test in systemd's place. READY=1 comes once the first spool scan is done
(or once waiting for a missing spool starts), WATCHDOG=1 at half the watchdog interval, and
STOPPING=1 when it stops."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import ServiceProcess

WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s


class NotifySocket:
    """A datagram socket bound where $NOTIFY_SOCKET points, and the notifications received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, list[str]]] = []  # (monotonic arrival, lines)

    def next(self, timeout: float) -> list[str]:
        self.sock.settimeout(timeout)
        lines = self.sock.recv(4096).decode().split("\n")
        self.received.append((time.monotonic(), lines))
        return lines

    def until(self, line: str, timeout: float = 30) -> list[str]:
        """Notifications until one holding `line`; that one."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.next(max(0.01, deadline - time.monotonic()))
            if line in lines:
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    notify = NotifySocket(tmp_path / "notify")
    yield notify
    notify.close()


@pytest.fixture
def start_notifying(tmp_path: Path, kafka_bootstrap: str, kafka_topic: str,
                    producer_runner: Callable[..., ServiceProcess],
                    notify_socket: NotifySocket) -> Callable[[Path], ServiceProcess]:
    """start(spool): the producer on that spool, notifying the test's socket."""

    def start(spool: Path) -> ServiceProcess:
        return producer_runner(
            "--cluster", "synthetic", "--spool", str(spool), "--state-dir",
            str(tmp_path / "state"), "--brokers", kafka_bootstrap, "--topic", kafka_topic,
            env={"NOTIFY_SOCKET": str(notify_socket.path),
                 "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    return start


def test_ready_after_the_first_scan_then_watchdog_pings_then_stopping(
        synthetic_spool: Any, start_notifying: Callable[[Path], ServiceProcess],
        notify_socket: NotifySocket) -> None:
    synthetic_spool.write_job(1, b"#!/bin/sh\necho before start\n")
    process = start_notifying(synthetic_spool.root)
    ready = notify_socket.until("READY=1")
    assert f"STATUS=watching slurm spool {synthetic_spool.root}" in ready
    assert "watching slurm spool" in process.log() and ": 1 jobs in it" in process.log(), \
        "READY=1 came before the first scan was done"
    for _ in range(4):
        notify_socket.until("WATCHDOG=1", timeout=5)
    arrivals = [at for at, lines in notify_socket.received if "WATCHDOG=1" in lines]
    gaps = [b - a for a, b in zip(arrivals[-4:-1], arrivals[-3:], strict=True)]
    assert all(0.3 < gap < 1.0 for gap in gaps), gaps  # half of WATCHDOG_USEC
    process.signal(signal.SIGTERM)
    stopping = notify_socket.until("STOPPING=1", timeout=10)
    assert any(line.startswith("STATUS=stopping") for line in stopping)
    assert process.wait(60) == 0


def test_ready_while_waiting_for_a_missing_spool(
        synthetic_spool: Any, start_notifying: Callable[[Path], ServiceProcess],
        notify_socket: NotifySocket) -> None:
    missing = synthetic_spool.root / "not-yet"
    start_notifying(missing)
    ready = notify_socket.until("READY=1")
    assert f"STATUS=waiting for spool directory {missing}" in ready
    notify_socket.until("WATCHDOG=1", timeout=5)
