"""Logging for every service: text or JSON lines, to stderr or a file reopened on SIGHUP;
repeated client errors passed once per interval."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from runtime.config import setting

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime"}


@dataclasses.dataclass(frozen=True)
class LogSettings:
    log_level: str = setting("INFO", choices=LOG_LEVELS, help="minimum level logged")
    log_format: str = setting("text", choices=("text", "json"),
                              help="text lines for people, json lines for log shippers")
    log_file: Path | None = setting(None, help="log to this file instead of stderr;"
                                    " reopened on SIGHUP (for logrotate)")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file is closed and opened again on request (after logrotate)."""

    def reopen(self) -> None:
        with self.lock if self.lock else _NullContext():
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()


class LogReopener:
    """Reopens a log file on SIGHUP outside the signal handler.

    A handler that reopened the file itself ran between two bytecodes of whatever the main
    thread was doing, possibly a write to that same stream: `RuntimeError: reentrant call`,
    and the old file kept. Here the handler only writes a byte to a pipe (async-signal-safe,
    never blocks); a thread reads it and reopens under the handler's lock, which waits for a
    write in progress to finish.
    """

    def __init__(self, handler: ReopenableFileHandler | None) -> None:
        self.handler = handler
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._previous: Any = None

    def __enter__(self) -> LogReopener:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def install(self) -> None:
        """Start the thread and handle SIGHUP (from the main thread: Python's rule)."""
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._thread = threading.Thread(target=self._serve, name="log-reopener", daemon=True)
        self._thread.start()
        self._previous = signal.signal(signal.SIGHUP, self._on_hangup)

    def uninstall(self) -> None:
        """Restore the previous SIGHUP handler and end the thread."""
        signal.signal(signal.SIGHUP, self._previous)
        write_fd, self._write_fd = self._write_fd, None
        if write_fd is not None:
            os.close(write_fd)  # the thread reads end-of-file and ends
        if self._thread is not None:
            self._thread.join()
        if self._read_fd is not None:
            os.close(self._read_fd)
        self._read_fd = self._thread = None

    def _on_hangup(self, _number: int, _frame: FrameType | None) -> None:
        if self._write_fd is not None:
            with contextlib.suppress(BlockingIOError):  # a reopen is already pending
                os.write(self._write_fd, b"\0")

    def _serve(self) -> None:
        assert self._read_fd is not None
        while os.read(self._read_fd, 4096):
            if self.handler is not None:
                self.handler.reopen()
                logging.getLogger(__name__).info("log file reopened (SIGHUP)")


# Repeated client messages are passed once per this many seconds.
REPEAT_LOG_INTERVAL = 60.0
_DIGITS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Passes a log message once per interval, then says how many like it it held back:
    librdkafka logs every reconnect attempt to a broker that is down (a consumer about 19
    lines a second), which would flood the log for the length of an outage. Messages that
    differ only in their numbers (timings, counts) are the same message here."""

    def __init__(self, interval: float = REPEAT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()  # librdkafka's and the service's threads both log

    def forget(self) -> None:
        """Pass the next message of every kind again (a test starting from a clean slate: the
        filters of module-level loggers outlive each test)."""
        with self._lock:
            self._last.clear()
            self._suppressed.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        # A record may name its kind itself (extra={"repeat_key": ...}) when its text varies.
        key = getattr(record, "repeat_key", None) or _DIGITS.sub("#", record.getMessage())
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = (f"{record.getMessage()} ({suppressed} more like it in the last"
                          f" {self.interval:g}s)")
            record.args = None
        return True


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def configure_logging(settings: LogSettings) -> ReopenableFileHandler | None:
    """Install the root handler; returns the file handler to reopen on SIGHUP, if any."""
    handler: logging.Handler
    file_handler: ReopenableFileHandler | None = None
    if settings.log_file is not None:
        file_handler = ReopenableFileHandler(settings.log_file, encoding="utf-8")
        handler = file_handler
    else:
        handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return file_handler
