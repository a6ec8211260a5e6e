"""runtime.logs: the one repeat filter of every service's Kafka client logs, and the log file
reopened on SIGHUP outside the signal handler."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

from consumers.common.runner import kafka_log as consumer_log
from producer.delivery import kafka_log as producer_log
from runtime.logs import LogReopener, ReopenableFileHandler, RepeatFilter
from testkit.waiting import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("k", logging.ERROR, "", 0, message, args or None, None)


def test_repeat_filter_passes_a_message_once_per_interval_then_says_how_many_it_held() -> None:
    clock = Clock()
    repeat = RepeatFilter(interval=60, clock=clock)
    assert repeat.filter(record("Connect to 127.0.0.1:9 failed (after %dms)", 0))
    for after in range(1, 19):
        clock.now += 1 / 19
        assert not repeat.filter(record("Connect to 127.0.0.1:9 failed (after %dms)", after))
    assert repeat.filter(record("another message"))
    clock.now += 59
    assert not repeat.filter(record("Connect to 127.0.0.1:9 failed (after 3ms)"))
    clock.now += 1.1
    later = record("Connect to 127.0.0.1:9 failed (after 1ms)")
    assert repeat.filter(later)
    assert later.getMessage() == ("Connect to 127.0.0.1:9 failed (after 1ms) (19 more like it"
                                  " in the last 60s)")
    clock.now += 61
    quiet = record("Connect to 127.0.0.1:9 failed (after 1ms)")
    assert repeat.filter(quiet)
    assert "more like it" not in quiet.getMessage()


def test_the_producer_and_the_consumers_use_the_same_repeat_filter() -> None:
    for logger in (consumer_log, producer_log):
        assert [type(f) for f in logger.filters] == [RepeatFilter]


@pytest.fixture
def file_logger(tmp_path: Path) -> tuple[logging.Logger, ReopenableFileHandler]:
    handler = ReopenableFileHandler(tmp_path / "service.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-reopen-{tmp_path.name}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, handler


def test_many_sighups_during_heavy_logging_reopen_the_file_without_reentrant_writes(
        file_logger: tuple[logging.Logger, ReopenableFileHandler], tmp_path: Path) -> None:
    """Each rotation: rename the file, SIGHUP; the main thread logs long lines throughout.
    A reopen inside the handler closes the stream under a write in progress (`reentrant
    call`); here every line is written whole, and the last ones reach the new file."""
    logger, handler = file_logger
    path = tmp_path / "service.log"
    errors: list[BaseException] = []
    rotations = 300
    done = threading.Event()

    def rotate() -> None:
        try:
            for number in range(rotations):
                # As logrotate does: the file it renames is the one the service reopened.
                wait_until(path.exists, 10, f"the log file is reopened after rotation {number}",
                           interval=0.001)
                os.replace(path, tmp_path / f"service.log.{number}")
                os.kill(os.getpid(), signal.SIGHUP)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    line = "x" * 2000
    # Bounded: a rotator slowed down by a busy machine must not let the writer fill the disk.
    max_lines = 100_000
    with LogReopener(handler):
        rotator = threading.Thread(target=rotate)
        rotator.start()
        written = 0
        try:
            while not done.is_set() and written < max_lines:
                logger.info("%d %s", written, line)
                written += 1
        except RuntimeError as exc:  # pragma: no cover - what the old handler did
            errors.append(exc)
        rotator.join()
        # The last SIGHUP's reopen happens on the reopener's thread: wait for the new file.
        wait_until(path.exists, 10, "the log file is reopened after the last rotation")
        logger.info("after the last rotation")
        handler.flush()
    handler.close()
    assert errors == []
    assert path.read_text().splitlines()[-1] == "after the last rotation"
    lines = [text for file in tmp_path.glob("service.log*") for text in
             file.read_text().splitlines() if text != "after the last rotation"]
    assert len(lines) == written
    assert all(text.endswith(line) for text in lines)


def test_the_reopener_restores_the_previous_sighup_handler(
        file_logger: tuple[logging.Logger, ReopenableFileHandler]) -> None:
    _, handler = file_logger
    before = signal.getsignal(signal.SIGHUP)
    with LogReopener(handler):
        assert signal.getsignal(signal.SIGHUP) is not before
    assert signal.getsignal(signal.SIGHUP) is before
    handler.close()
