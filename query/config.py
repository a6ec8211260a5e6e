"""The settings of `sarchive` (flags, SARCHIVE_* variables, TOML keys via runtime.config):
which backend to read and how to reach it. The Elasticsearch connection settings are
sarchive-es's own (runtime.es_settings): the same flags, variables and keys, checked alike;
with no --es-url, sarchive reads the --archive."""

from __future__ import annotations

import dataclasses
import os
from datetime import tzinfo
from pathlib import Path

from runtime.config import ConfigError, setting
from runtime.es_settings import EsConnectionSettings
from runtime.time_zones import LOCAL_ZONE, time_zone
from schemas.archive_layout import DEFAULT_PRESET, Layout, Period

BACKENDS = ("auto", "elasticsearch", "archive")


@dataclasses.dataclass(frozen=True)
class QueryConfig(EsConnectionSettings):
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
        self.check_es_connection()
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
