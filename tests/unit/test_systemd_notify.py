"""The sd_notify protocol against a real AF_UNIX datagram socket bound by the test, as systemd
binds $NOTIFY_SOCKET: one datagram of KEY=VALUE lines per notification, abstract names written
with '@', the watchdog at half of $WATCHDOG_USEC, nothing at all outside systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.systemd_notify import SystemdNotifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and its $NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_and_stopping_arrive_as_one_datagram_each(
        manager: tuple[socket.socket, str]) -> None:
    sock, name = manager
    notifier = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    notifier.ready("watching slurm spool /s")
    notifier.status("busy")
    notifier.stopping("stopping: 2 events")
    assert received(sock) == ["READY=1", "STATUS=watching slurm spool /s"]
    assert received(sock) == ["STATUS=busy"]
    assert received(sock) == ["STOPPING=1", "STATUS=stopping: 2 events"]
    notifier.close()


def test_abstract_socket_name_with_at_sign_is_reached() -> None:
    name = f"sarchive-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        assert received(sock) == ["READY=1", "STATUS=up"]
        notifier.close()


def test_watchdog_is_sent_at_half_of_watchdog_usec_and_not_more_often(
        manager: tuple[socket.socket, str]) -> None:
    sock, name = manager
    notifier = SystemdNotifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000",
                                "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == 2.0
    notifier.watchdog(100.0)
    assert notifier.next_watchdog() == 102.0
    notifier.watchdog(101.9)  # not due: nothing sent
    notifier.watchdog(102.0)
    assert received(sock) == ["WATCHDOG=1"]
    assert received(sock) == ["WATCHDOG=1"]
    sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    notifier.close()


def test_watchdog_meant_for_another_process_or_absent_is_not_kept() -> None:
    other = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000",
             "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(other).next_watchdog() is None
    assert SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent"}).watchdog_interval is None


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready("up")
    notifier.watchdog(0.0)
    notifier.stopping("bye")
    notifier.close()


def test_unreachable_notify_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.ready("up")
    notifier.status("still up")
    assert [r.getMessage() for r in caplog.records if "cannot notify systemd" in
            r.getMessage()] == [f"cannot notify systemd at {tmp_path / 'gone'}:"
                                " No such file or directory"]
    notifier.close()
