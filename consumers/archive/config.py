"""Configuration of sarchive-archive: the shared consumer settings plus the archive's own."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from consumers.common.settings import ConsumerSettings
from runtime.config import ConfigError, setting
from runtime.time_zones import LOCAL_ZONE, time_zone
from schemas.archive_layout import DEFAULT_PRESET, PRESETS, Layout, Period


def parse_mode(text: str, what: str) -> int:
    """'0640', '640' or '0o640' -> 0o640; permission bits only."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an octal mode such as 0640") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{what} {text!r} must be permission bits between 0000 and 0777")
    return mode


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArchiveConfig(ConsumerSettings):
    group: str = setting("sarchive-archive", help="Kafka consumer group id; instances sharing"
                         " a group share the topic's partitions")
    archive: Path = setting(required=True, help="root directory of the archive (must exist)")
    period: str = setting(Period.DAILY.value, choices=tuple(p.value for p in Period),
                          help="date directory of the {period} field: YYYY, YYYYMM, YYYYMMDD"
                          " or none, from the job's submit time in --time-zone")
    time_zone: str = setting(LOCAL_ZONE, help="time zone of the date fields ({period} {year}"
                             " {month} {day}): an IANA name such as Europe/Brussels, UTC, or"
                             " 'local', the host's (TZ, else /etc/localtime); sidecars keep"
                             " UTC")
    layout: str = setting(DEFAULT_PRESET, help=f"preset ({', '.join(PRESETS)}) or a path"
                          " template with fields {cluster} {user} {job_name} {job_id}"
                          " {job_id_shard} {year} {month} {day} {period} {name} {ext}")
    file_mode: str = setting("0640", help="permission bits of archived files (octal)")
    dir_mode: str = setting("0750", help="permission bits of directories the archive"
                            " creates (octal)")
    metadata: bool = setting(True, help="write a JSON metadata sidecar beside each job's"
                             " files (--no-metadata: do not)")

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            parse_mode(self.file_mode, "file_mode")
            parse_mode(self.dir_mode, "dir_mode")
            self.compiled_layout()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def compiled_layout(self) -> Layout:
        """The layout, its time zone resolved now (for 'local': from this process's TZ and
        /etc/localtime)."""
        return Layout.from_setting(self.layout, Period(self.period),
                                   time_zone(self.time_zone, os.environ))
