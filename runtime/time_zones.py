"""The time zone of a `--time-zone` setting: an IANA name, UTC, or 'local', the host's zone as
the C library sees it. Shared by the archive consumer, which dates its directories in it, and
the `sarchive` command, which must compute the same directories."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path

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
