"""sarchive-archive: job events from Kafka into a dated, durable, idempotent file archive."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from consumers.archive.config import ArchiveConfig
from consumers.archive.sink import ArchiveSink
from consumers.common.service import run_service
from runtime.startup import ConsoleScript

DESCRIPTION = ("Archive the job scripts and environments of the job events on a Kafka topic"
               " as files, exactly once, in dated directories (see docs/archive.md).")

SCRIPT = ConsoleScript("sarchive-archive", DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(ArchiveConfig, argv, SCRIPT, make_sink=ArchiveSink)


if __name__ == "__main__":
    sys.exit(main())
