"""The one start-up path of every sarchive console script.

Configuration (flags, environment, TOML), logging, the service's construction, the metrics
endpoint and the run itself happen inside one error boundary:

- a configuration or start-up error (a bad setting, an unreadable secret file, a log file that
  cannot be opened, a metrics port in use, a Kafka property librdkafka refuses) is one line
  naming the setting and the cause, and exit status 2, which systemd's
  `RestartPreventExitStatus=2` keeps from restarting in a loop;
- a fatal runtime error (ServiceFatalError) is one line and exit status 1;
- anything else is a bug: logged with its traceback, exit status 1.

Service constructors do no I/O, so nothing needs closing when a later start-up step fails.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry

from runtime.config import (
    ConfigError,
    describe_config,
    load_config,
    unknown_environment,
    unknown_variable_text,
)
from runtime.errors import ServiceFatalError
from runtime.exits import EXIT_CONFIG, EXIT_FAILURE
from runtime.logs import LogSettings, ReopenableFileHandler, configure_logging
from runtime.metrics import MetricsSettings, register_build_info, serve_metrics
from schemas.version import VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings(LogSettings, MetricsSettings):
    """The settings every service has: logging and the metrics endpoint."""


ConfigT = TypeVar("ConfigT", bound=ServiceSettings)


class Service(Protocol):
    def run(self) -> int:
        """Run until stopped; the process exit status."""


@dataclass(frozen=True)
class StartupContext:
    """What the start-up path hands to a service's builder."""

    registry: CollectorRegistry
    log_file: ReopenableFileHandler | None


@dataclass(frozen=True)
class ConsoleScript:
    """A console script: its name (also the `service` label of sarchive_build_info) and the
    one-paragraph description of its --help."""

    prog: str
    description: str


def run_console_script(
    script: ConsoleScript,
    config_type: type[ConfigT],
    build: Callable[[ConfigT, StartupContext], Service],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Load the configuration, set up logging and metrics, build the service and run it;
    returns the process exit status (see the module's docstring)."""
    try:
        config = load_config(config_type, argv, prog=script.prog,
                             description=script.description, environ=environ)
        log_file = _configure_logging(config)
    except ConfigError as exc:
        # Logging is not set up (or is what failed): stderr is all there is. A misspelt
        # variable may be the cause (SARCHIVE_CLUSTR leaves cluster unset): said on the line.
        misspelt = "".join(f"; {unknown_variable_text(variable, suggestion)}"
                           for variable, suggestion in unknown_environment(config_type, environ)
                           if suggestion)
        print(f"{script.prog}: configuration error: {exc}{misspelt}", file=sys.stderr)
        return EXIT_CONFIG
    described = describe_config(config)
    log.info("%s %s starting with %s", script.prog, VERSION, described,
             extra={"config": described})
    for variable, suggestion in unknown_environment(config_type, environ):
        log.warning("%s: it is ignored", unknown_variable_text(variable, suggestion, script.prog))
    registry = CollectorRegistry()
    register_build_info(registry, script.prog)
    try:
        service = build(config, StartupContext(registry, log_file))
        _serve_metrics(config, registry)
        return service.run()
    except ConfigError as exc:
        log.error("%s: configuration error: %s", script.prog, exc)
        return EXIT_CONFIG
    except ServiceFatalError as exc:
        log.error("%s: fatal: %s", script.prog, exc)
        return EXIT_FAILURE
    except Exception:
        log.exception("%s: fatal: unexpected error", script.prog)
        return EXIT_FAILURE


def _configure_logging(config: LogSettings) -> ReopenableFileHandler | None:
    try:
        return configure_logging(config)
    except OSError as exc:
        raise ConfigError(f"log_file {config.log_file}: cannot open it:"
                          f" {exc.strerror or exc}") from exc


def _serve_metrics(config: MetricsSettings, registry: CollectorRegistry) -> None:
    try:
        serve_metrics(config, registry)
    except OSError as exc:
        raise ConfigError(f"metrics_port {config.metrics_port} on {config.metrics_address}:"
                          f" cannot serve metrics: {exc.strerror or exc}") from exc
