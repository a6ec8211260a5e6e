"""Who is asking: the user a trusted reverse proxy authenticated, or nobody (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from web.config import Network

# What an authenticating proxy passes: a login name, maybe with an SSO realm (user@REALM).
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,127}$")


@dataclass(frozen=True)
class IdentityPolicy:
    trusted_proxies: tuple[Network, ...]
    dev_user: str | None = None


def _address(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(peer or "")
    except ValueError:
        return None


def viewer_of(peer: str | None, header_value: str | None, policy: IdentityPolicy,
              ) -> str | None:
    """The viewer of a request from peer carrying header_value in the user header: believed
    only from a trusted proxy; in development mode the fixed user, from loopback only. None:
    the request is refused (never treated as anonymous)."""
    address = _address(peer)
    if address is None:
        return None
    if policy.dev_user is not None:
        return policy.dev_user if address.is_loopback else None
    if not any(address in network for network in policy.trusted_proxies):
        return None
    if header_value is None or not _USER_NAME.match(header_value):
        return None
    return header_value
