"""systemd's service notification protocol (sd_notify), without a library.

A service of `Type=notify` tells systemd it is ready, what it is doing, that it is alive and
that it is stopping by sending newline-separated `KEY=VALUE` lines in one datagram to the
AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
'@'). With `WatchdogSec=` systemd sets `$WATCHDOG_USEC` (and `$WATCHDOG_PID`) and kills the
service when no `WATCHDOG=1` arrives within that time; sending at half of it is the
documented practice. Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify_address(name: str) -> str | bytes:
    """The socket address `$NOTIFY_SOCKET` names: '@' stands for the abstract namespace's
    leading NUL."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class SystemdNotifier:
    """Notifications for the service manager that started this process. The constructor
    reads the environment only; the socket is opened by the first notification."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._name = env.get("NOTIFY_SOCKET", "")
        self._address = notify_address(self._name) if self._name else None
        self.watchdog_interval = _watchdog_interval(env)
        self._socket: socket.socket | None = None
        self._next_watchdog = 0.0
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self, now: float) -> None:
        """Tell the watchdog we are alive, if its half-interval has passed since the last
        time (`now`: monotonic seconds)."""
        if self.watchdog_interval is None or now < self._next_watchdog:
            return
        self._next_watchdog = now + self.watchdog_interval
        self.notify("WATCHDOG=1")

    def next_watchdog(self) -> float | None:
        """When watchdog() next has something to send (monotonic), or None without one."""
        return None if self.watchdog_interval is None else self._next_watchdog

    def notify(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX,
                                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # The manager went away or the socket is not ours to write: the service itself
            # is fine, and systemd (if it is still there) acts on the missing notification.
            if not self._failure_logged:
                log.warning("cannot notify systemd at %s: %s", self._name,
                            exc.strerror or exc)
                self._failure_logged = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC` in seconds, when the watchdog is meant for this process."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0"))
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2 / 1_000_000
