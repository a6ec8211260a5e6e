"""One GET to sarchive-web as the site's authenticating proxy sends it: the user in the header
the service believes from a trusted address (none: an unauthenticated request). Shared by the
web tests and bench/web_bench.py."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_HEADER = "X-Remote-User"


@dataclass(frozen=True)
class WebAnswer:
    status: int
    body: bytes
    headers: dict[str, str]


def web_get(url: str, path: str, user: str | None, *, source: str | None = None,
            timeout: float = 30) -> WebAnswer:
    """GET path from the service at url (http://host:port) on a new connection, as user,
    from the source address if one is given."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request("GET", path, headers={USER_HEADER: user} if user else {})
        response = connection.getresponse()
        return WebAnswer(response.status, response.read(), dict(response.getheaders()))
    finally:
        connection.close()
