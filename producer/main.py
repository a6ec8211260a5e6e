"""`sarchive-producer`: the producer service on the shared start-up path."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from producer.config import DESCRIPTION, PROG, ProducerConfig, kafka_producer_properties
from producer.gridengine_bootstrap import classic_spool
from producer.service import ProducerService
from runtime.startup import ConsoleScript, StartupContext, run_console_script
from runtime.systemd_notify import SystemdNotifier
from schemas.model import Scheduler

SCRIPT = ConsoleScript(PROG, DESCRIPTION)


def build(config: ProducerConfig, context: StartupContext) -> ProducerService:
    """The composition root: the one place that reads what the service needs from outside
    (the Kafka properties read the SASL password file; Grid Engine's bootstrap file tells
    whether its qmaster spools classic, and where), so the constructors do no I/O."""
    if config.scheduler == Scheduler.GRIDENGINE.value:
        config = dataclasses.replace(
            config, spool=classic_spool(config.gridengine_bootstrap, config.spool))
    return ProducerService(config, context.registry, kafka_producer_properties(config),
                           log_handler=context.log_file, notifier=SystemdNotifier())


def main(argv: Sequence[str] | None = None) -> int:
    return run_console_script(SCRIPT, ProducerConfig, build, argv)


if __name__ == "__main__":
    sys.exit(main())
