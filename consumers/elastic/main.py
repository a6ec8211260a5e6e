"""sarchive-es: index every job event from Kafka into Elasticsearch, searchable by words."""

from __future__ import annotations

from collections.abc import Sequence

from consumers.common.service import run_service
from consumers.elastic.config import EsConsumerConfig
from consumers.elastic.sink import make_sink
from runtime.startup import ConsoleScript

DESCRIPTION = ("Consume job events from Kafka and index them into Elasticsearch: one document"
               " per job (_id = job key) in monthly indices <prefix>-YYYY.MM behind the alias"
               " <prefix>.")

SCRIPT = ConsoleScript("sarchive-es", DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(EsConsumerConfig, argv, SCRIPT, make_sink=make_sink)
