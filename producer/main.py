"""`sarchive-producer`: configuration, logging, metrics, then the service loop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from producer.config import PROG, load_producer_config
from producer.outbox import OutboxSyncError
from producer.service import ProducerService, StateDirError
from schemas.runtime.config import ConfigError, describe_config
from schemas.runtime.logs import configure_logging
from schemas.runtime.metrics import serve_metrics
from schemas.version import VERSION

log = logging.getLogger("producer")

EXIT_CONFIG = 2
EXIT_FATAL = 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_producer_config(argv)
        log_handler = configure_logging(config)
    except (ConfigError, OSError) as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    described = describe_config(config)
    log.info("%s %s starting with %s", PROG, VERSION, described,
             extra={"config": described})
    registry = CollectorRegistry()
    service = ProducerService(config, registry, log_handler=log_handler)
    try:
        serve_metrics(config, registry)
        return service.run()
    except (StateDirError, OutboxSyncError) as exc:
        log.error("fatal: %s", exc)
        return EXIT_FATAL
    except OSError as exc:
        log.exception("fatal: %s", exc)
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
