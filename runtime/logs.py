"""Logging for every service: text or JSON lines, to stderr or a file reopened on SIGHUP."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
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
