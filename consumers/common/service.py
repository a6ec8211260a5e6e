"""The main() every consumer service shares: configuration, logging, metrics, signals."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from prometheus_client import CollectorRegistry

from consumers.common.runner import EXIT_CONFIG, EXIT_FAILURE, ConsumerRunner
from consumers.common.settings import ConsumerSettings
from consumers.common.sink import Sink
from schemas.runtime.config import ConfigError, describe_config, load_config
from schemas.runtime.logs import configure_logging
from schemas.runtime.metrics import register_build_info, serve_metrics
from schemas.version import VERSION

log = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=ConsumerSettings)


def run_service(
    config_type: type[ConfigT],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    make_sink: Callable[[ConfigT, CollectorRegistry], Sink],
) -> int:
    """Load the configuration, build the sink and run the consumer until it stops.

    Exit codes: 0 stopped on request, 1 fatal runtime error, 2 invalid configuration.
    """
    try:
        config = load_config(config_type, argv, prog=prog, description=description)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log_file = configure_logging(config)
    log.info("%s %s starting with %s", prog, VERSION,
             json.dumps(describe_config(config), sort_keys=True, default=str))
    registry = CollectorRegistry()
    register_build_info(registry, prog)
    try:
        sink = make_sink(config, registry)
        runner = ConsumerRunner(config, sink, registry, prog)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    try:
        serve_metrics(config, registry)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", config.metrics_address,
                  config.metrics_port, exc)
        sink.close()
        return EXIT_FAILURE

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        runner.request_stop()

    def reopen(signum: int, frame: FrameType | None) -> None:
        if log_file is not None:
            log_file.reopen()

    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reopen))}
    try:
        return runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
