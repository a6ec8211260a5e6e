"""The configuration of sarchive-es: the shared consumer settings plus Elasticsearch's."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

from consumers.common.settings import ConsumerSettings
from consumers.elastic.documents import check_index_prefix
from consumers.elastic.template import DEFAULT_SHARDS
from runtime.config import ConfigError, secret_value, setting

_SHARED_GROUP_FIELD = next(f for f in dataclasses.fields(ConsumerSettings) if f.name == "group")


@dataclasses.dataclass(frozen=True)
class EsConsumerConfig(ConsumerSettings):
    group: str = setting("sarchive-es", help=_SHARED_GROUP_FIELD.metadata["help"])
    es_url: tuple[str, ...] = setting(
        ("http://127.0.0.1:9200",),
        help="Elasticsearch node URL, http:// or https:// (repeatable: several nodes of one"
        " cluster)")
    es_api_key: str | None = setting(None, secret=True,
                                     help="Elasticsearch API key (base64 id:key), instead of"
                                     " a user and password")
    es_user: str | None = setting(None, help="Elasticsearch user for basic authentication")
    es_password: str | None = setting(None, secret=True, help="password of --es-user")
    es_password_file: Path | None = setting(
        None, help="file holding the password of --es-user (first line), instead of"
        " --es-password")
    es_ca_certs: Path | None = setting(
        None, help="CA certificate file (PEM) to verify the Elasticsearch nodes' TLS"
        " certificates (default: the system's CAs)")
    es_verify_certs: bool = setting(True, help="verify the nodes' TLS certificates;"
                                    " --no-es-verify-certs only for throw-away test nodes")
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
        self._check_urls()
        self._check_credentials()
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

    def _check_urls(self) -> None:
        if not self.es_url:
            raise ConfigError("es_url: give at least one Elasticsearch URL")
        for url in self.es_url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"es_url {url!r} is not an http:// or https:// URL")
            if parts.username or parts.password:
                raise ConfigError(f"es_url {parts.hostname!r}: give credentials with"
                                  " --es-user/--es-password or --es-api-key, not in the URL")
        if self.es_ca_certs is not None and not any(u.startswith("https://")
                                                    for u in self.es_url):
            raise ConfigError("es_ca_certs is given but no es_url is https://")

    def _check_credentials(self) -> None:
        if self.es_api_key and self.es_user:
            raise ConfigError("give either es_api_key or es_user, not both")
        if self.es_password is not None and self.es_password_file is not None:
            raise ConfigError("give either es_password or es_password_file, not both")
        if (self.es_password is not None or self.es_password_file is not None) \
                and not self.es_user:
            raise ConfigError("es_password needs es_user")

    @property
    def identity(self) -> str:
        """Who the consumer is to Elasticsearch, for error messages (never the secret)."""
        if self.es_api_key:
            return "with an API key"
        if self.es_user:
            return f"as user {self.es_user!r}"
        return "without credentials"


def es_password(config: EsConsumerConfig) -> str | None:
    """The password from --es-password or the first line of --es-password-file."""
    return secret_value(config.es_password, config.es_password_file, "es_password_file")
