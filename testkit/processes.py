"""One harness for a service under test run as a real process (its console script): started
with its output in a log file, signalled, stopped or killed, its log and its Prometheus
/metrics read, and waits on what it logs or exposes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from testkit.waiting import POLL_INTERVAL, WaitTimeoutError, wait_until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_metric(port: int, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One sample of the Prometheus page on 127.0.0.1:port (None: not exposed, or the page
    does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == dict(labels or {}):
                return float(sample.value)
    return None


@dataclass
class ServiceProcess:
    """A service run as a real subprocess: stdout and stderr go to log_path; env is layered
    over os.environ; metrics_port is where its /metrics answers, if it serves one."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env}, cwd=self.cwd)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process

    @property
    def pid(self) -> int:
        return self._started().pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, number: int) -> None:
        self._started().send_signal(number)

    def wait(self, timeout: float) -> int:
        """The exit code; killed, and WaitTimeoutError, if it has not exited within timeout."""
        process = self._started()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WaitTimeoutError(f"{self.name} did not exit within {timeout:g} s\n"
                              f"{self.log_tail()}") from None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as systemd stops a service, and the exit code once it has shut down
        (None: never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.alive():
            self._started().kill()
            self._started().wait(30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"{self.name} log (tail):\n" + "\n".join(self.log().splitlines()[-lines:])

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample of the service's /metrics (None: not exposed, or not up yet)."""
        if self.metrics_port is None:
            raise RuntimeError(f"{self.name} serves no /metrics")
        return read_metric(self.metrics_port, name, labels)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str, *,
                   interval: float = POLL_INTERVAL, context: Callable[[], str] = str) -> None:
        """wait_until that gives up as soon as the service has exited; either failure shows
        context() and the service's log."""
        def details() -> str:
            return f"{context()}\n{self.log_tail()}".lstrip("\n")

        def holds() -> bool:
            if condition():
                return True
            if not self.alive():
                raise WaitTimeoutError(f"{self.name} exited ({self.returncode()}) before {what}\n"
                                  f"{details()}")
            return False
        wait_until(holds, timeout, what, interval=interval, context=details)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        self.wait_until(lambda: text in self.log(), timeout, f"{text!r} is in the log")

    def wait_for_metric(self, name: str, condition: Callable[[float], bool],
                        labels: Mapping[str, str] | None = None,
                        timeout: float = 30.0) -> float:
        """Until the sample exists and satisfies condition; its value then."""
        values: list[float | None] = [None]

        def holds() -> bool:
            values[0] = self.metric(name, labels)
            return values[0] is not None and condition(values[0])
        self.wait_until(holds, timeout, f"{name}{dict(labels or {})} holds",
                        context=lambda: f"last value: {values[0]}")
        assert values[0] is not None
        return values[0]
