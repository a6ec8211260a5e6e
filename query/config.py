"""The settings of `sarchive` (flags, SARCHIVE_* variables, TOML keys via runtime.config):
which backend to read and how to reach it."""

from __future__ import annotations

import dataclasses
import os
from datetime import tzinfo
from pathlib import Path
from urllib.parse import urlsplit

from runtime.config import ConfigError, secret_value, setting
from runtime.time_zones import LOCAL_ZONE, time_zone
from schemas.archive_layout import DEFAULT_PRESET, Layout, Period

BACKENDS = ("auto", "elasticsearch", "archive")


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    es_url: tuple[str, ...] = setting(
        (), help="Elasticsearch node URL, http:// or https:// (repeatable: nodes of one"
        " cluster); with it sarchive reads Elasticsearch, without it the --archive")
    es_api_key: str | None = setting(None, secret=True,
                                     help="Elasticsearch API key (base64 id:key)")
    es_user: str | None = setting(None, help="Elasticsearch user for basic authentication")
    es_password: str | None = setting(None, secret=True, help="password of --es-user")
    es_password_file: Path | None = setting(
        None, help="file holding the password of --es-user (first line)")
    es_ca_certs: Path | None = setting(
        None, help="CA certificate file (PEM) for the nodes' TLS certificates")
    es_verify_certs: bool = setting(True, help="verify the nodes' TLS certificates")
    es_timeout: float = setting(10.0, help="seconds to wait for one Elasticsearch request")
    index: str = setting("sarchive-jobs", help="the index alias sarchive-es writes")
    archive: Path | None = setting(None, help="root directory of the file archive")
    layout: str = setting(DEFAULT_PRESET, help="the archive's layout: a preset or a template,"
                          " as sarchive-archive's --layout")
    period: str = setting(Period.DAILY.value, choices=[p.value for p in Period],
                          help="the archive's {period} directories, as sarchive-archive's")
    time_zone: str = setting(LOCAL_ZONE, help="time zone of the archive's date directories and"
                             " of dates shown and given (local, UTC or a name like"
                             " Europe/Brussels)")
    backend: str = setting("auto", choices=BACKENDS,
                           help="which to read: auto is Elasticsearch when --es-url is given,"
                           " else the archive")

    def __post_init__(self) -> None:
        for url in self.es_url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"es_url {url!r} is not an http:// or https:// URL")
        if self.es_api_key and self.es_user:
            raise ConfigError("give either es_api_key or es_user, not both")
        if self.es_password is not None and self.es_password_file is not None:
            raise ConfigError("give either es_password or es_password_file, not both")
        self.zone()
        self.archive_layout()

    @property
    def chosen_backend(self) -> str:
        if self.backend != "auto":
            chosen = self.backend
        else:
            chosen = "elasticsearch" if self.es_url else "archive"
        if chosen == "elasticsearch" and not self.es_url:
            raise ConfigError("backend elasticsearch needs --es-url (or SARCHIVE_ES_URL)")
        if chosen == "archive" and self.archive is None:
            raise ConfigError("nothing to read: give --es-url (Elasticsearch) or --archive DIR"
                              " (the file archive), or SARCHIVE_ES_URL / SARCHIVE_ARCHIVE")
        return chosen

    def zone(self) -> tzinfo:
        """The zone of the archive's date directories and of dates shown, resolved as the
        archive consumer resolves its own (runtime.time_zones)."""
        try:
            return time_zone(self.time_zone, os.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def archive_layout(self) -> Layout:
        try:
            return Layout.from_setting(self.layout, Period(self.period), self.zone())
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def es_password_value(self) -> str | None:
        return secret_value(self.es_password, self.es_password_file, "es_password_file")
