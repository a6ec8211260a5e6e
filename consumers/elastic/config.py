"""The configuration of sarchive-es: the shared consumer settings, the Elasticsearch connection
settings it shares with `sarchive` (runtime.es_settings), and its index and bulk settings."""

from __future__ import annotations

import dataclasses

from consumers.common.settings import ConsumerSettings
from consumers.elastic.documents import check_index_prefix
from consumers.elastic.template import DEFAULT_SHARDS
from runtime.config import ConfigError, setting
from runtime.es_settings import ES_URL_HELP, EsConnectionSettings

_SHARED_GROUP_FIELD = next(f for f in dataclasses.fields(ConsumerSettings) if f.name == "group")


@dataclasses.dataclass(frozen=True)
class EsConsumerConfig(ConsumerSettings, EsConnectionSettings):
    group: str = setting("sarchive-es", help=_SHARED_GROUP_FIELD.metadata["help"])
    es_url: tuple[str, ...] = setting(("http://127.0.0.1:9200",), help=ES_URL_HELP)
    index_prefix: str = setting("sarchive-jobs", help="monthly indices are"
                                " <prefix>-YYYY.MM (UTC month of submission); the alias"
                                " <prefix> covers them all")
    index_shards: int = setting(
        DEFAULT_SHARDS, help="primary shards of each monthly index (read when an index is"
        " created: a change applies from the next month on)")
    index_replicas: int | None = setting(
        None, help="replica shards of each monthly index (default: the cluster's, 1)")
    bulk_max_docs: int = setting(500, help="most documents in one bulk request")
    bulk_max_bytes: int = setting(8 * 1024 * 1024,
                                  help="most bytes in one bulk request (a larger document"
                                  " is sent alone)")
    es_timeout: float = setting(30.0, help="seconds to wait for one Elasticsearch request")
    es_max_retries: int = setting(
        3, help="retries of a failed bulk request (connection error, timeout, 429, 5xx) with"
        " exponential back-off before the consumer pauses and retries the batch later")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.es_url:
            raise ConfigError("es_url: give at least one Elasticsearch URL")
        self.check_es_connection()
        try:
            check_index_prefix(self.index_prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.index_replicas is not None and self.index_replicas < 0:
            raise ConfigError(f"index_replicas must not be negative, got {self.index_replicas}")
        for name in ("index_shards", "bulk_max_docs", "bulk_max_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.es_timeout <= 0:
            raise ConfigError(f"es_timeout must be positive, got {self.es_timeout}")
        if self.es_max_retries < 0:
            raise ConfigError(f"es_max_retries must not be negative, got {self.es_max_retries}")
