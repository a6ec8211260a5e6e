"""Configuration of sarchive-archive: the shared consumer settings plus the archive's own."""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path

from consumers.common.settings import ConsumerSettings
from runtime.config import ConfigError, setting
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


LOCAL_ZONE = "local"
LOCALTIME = Path("/etc/localtime")


def named_time_zone(name: str, what: str) -> tzinfo:
    """An IANA zone such as Europe/Brussels from the system's time zone database; ValueError
    for a name it does not know."""
    if name == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{what} {name!r} is not a time zone name such as Europe/Brussels or"
                         " UTC (the zone database is /usr/share/zoneinfo)") from None


def local_time_zone(environ: Mapping[str, str], localtime: Path = LOCALTIME) -> tzinfo:
    """The host's zone as the C library sees it: TZ if set (a zone name, ':' optional, or
    the path of a zone file; empty means UTC), else /etc/localtime (the zone its symlink
    names, else the file itself), else UTC."""
    tz = environ.get("TZ")
    if tz is not None:
        return _tz_zone(tz)
    try:
        target = os.readlink(localtime)
    except FileNotFoundError:
        return UTC
    except OSError:  # not a symlink: a copied zone file
        return _zone_file(localtime, str(localtime))
    _, found, key = target.rpartition("zoneinfo/")
    if found:
        try:
            return named_time_zone(key, str(localtime))
        except ValueError:
            pass  # a zone file outside the database's names: read it as a file
    return _zone_file(localtime, str(localtime))


def _tz_zone(tz: str) -> tzinfo:
    name = tz.removeprefix(":")
    if not name:
        return UTC
    if name.startswith("/"):
        return _zone_file(Path(name), f"TZ={tz}")
    return named_time_zone(name, "TZ")


def _zone_file(path: Path, what: str) -> tzinfo:
    try:
        with path.open("rb") as zone_file:
            return zoneinfo.ZoneInfo.from_file(zone_file, key=str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: not a readable time zone file ({exc})") from None


def time_zone(setting_value: str, environ: Mapping[str, str]) -> tzinfo:
    """The zone of the --time-zone setting: 'local' (the host's, see local_time_zone) or an
    IANA name."""
    if setting_value == LOCAL_ZONE:
        return local_time_zone(environ)
    return named_time_zone(setting_value, "time_zone")


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
