"""A consumer service on the shared start-up path: the runner with its sink, and signals."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from prometheus_client import CollectorRegistry

from consumers.common.runner import ConsumerRunner
from consumers.common.settings import ConsumerSettings
from consumers.common.sink import Sink
from runtime.logs import LogReopener, ReopenableFileHandler
from runtime.startup import ConsoleScript, StartupContext, run_console_script

log = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=ConsumerSettings)


class ConsumerService:
    """The runner, stopped by SIGTERM/SIGINT after the batch in hand; SIGHUP reopens the log
    file (outside the signal handler: runtime.logs.LogReopener). The constructor does no
    I/O."""

    def __init__(self, runner: ConsumerRunner, log_file: ReopenableFileHandler | None) -> None:
        self.runner = runner
        self.log_file = log_file

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with LogReopener(self.log_file):
                return self.runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        self.runner.request_stop()


def run_service(
    config_type: type[ConfigT],
    argv: Sequence[str] | None,
    script: ConsoleScript,
    make_sink: Callable[[ConfigT, CollectorRegistry], Sink],
) -> int:
    """main() of a consumer service: its sink on the shared runner, through the start-up path.

    Exit codes: 0 stopped on request, 1 fatal runtime error, 2 invalid configuration.
    """
    def build(config: ConfigT, context: StartupContext) -> ConsumerService:
        sink = make_sink(config, context.registry)
        runner = ConsumerRunner(config, sink, context.registry, script.prog)
        return ConsumerService(runner, context.log_file)

    return run_console_script(script, config_type, build, argv)
