"""The settings of sarchive-web (flags, SARCHIVE_* variables, TOML keys via runtime.config):
where it listens, whom it believes, who sees what, and the Elasticsearch it reads (the
same settings as `sarchive`'s)."""

from __future__ import annotations

import dataclasses
import ipaddress

from query.config import QueryConfig
from runtime.config import ConfigError, setting
from runtime.startup import ServiceSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1", "localhost")


@dataclasses.dataclass(frozen=True)
class WebConfig(ServiceSettings, QueryConfig):
    listen_address: str = setting("127.0.0.1", help="address the pages are served on")
    port: int = setting(8080, help="port the pages are served on")
    url_prefix: str = setting(
        "", help="the path the proxy serves the pages under and passes on unchanged"
        " (/sarchive): links are made under it")
    threads: int = setting(8, help="requests served at once (waitress worker threads)")
    trusted_proxy: tuple[str, ...] = setting(
        (), help="address or network (CIDR) of the authenticating reverse proxy whose"
        " user header is believed (repeatable); a request from anywhere else is refused")
    user_header: str = setting(
        "X-Remote-User", help="the header in which the trusted proxy passes the"
        " authenticated user (Apache: RequestHeader set X-Remote-User %%{REMOTE_USER}s)")
    dev_user: str | None = setting(
        None, help="development only: every request from loopback is this user, no proxy;"
        " refused unless listen_address is a loopback address")
    admin_user: tuple[str, ...] = setting((), help="a user who sees every job (repeatable)")
    admin_group: tuple[str, ...] = setting(
        (), help="a Unix group (resolved through the host's NSS) whose members see every job"
        " (repeatable)")
    coordinator: tuple[str, ...] = setting(
        (), help="USER=ACCOUNT: USER sees every job of ACCOUNT (repeatable)")
    page_size: int = setting(50, help="jobs per page of search results")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.es_url or self.chosen_backend != "elasticsearch":
            raise ConfigError("sarchive-web reads Elasticsearch only (access control is"
                              " enforced in its queries): give --es-url")
        if self.dev_user is not None and self.listen_address not in LOOPBACK_ADDRESSES:
            raise ConfigError(f"dev_user needs a loopback listen_address, not"
                              f" {self.listen_address!r}")
        self.proxy_networks()
        if self.url_prefix and (not self.url_prefix.startswith("/")
                                or self.url_prefix.endswith("/")):
            raise ConfigError(f"url_prefix {self.url_prefix!r}: give /path, without a"
                              " trailing /")
        self.coordinated_accounts()
        if not 1 <= self.page_size <= 1000:
            raise ConfigError(f"page_size {self.page_size} is not between 1 and 1000")

    def proxy_networks(self) -> tuple[Network, ...]:
        try:
            return tuple(ipaddress.ip_network(text, strict=False)
                         for text in self.trusted_proxy)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxy: {exc}") from exc

    def coordinated_accounts(self) -> dict[str, tuple[str, ...]]:
        """user -> the accounts whose jobs that user coordinates."""
        accounts: dict[str, list[str]] = {}
        for entry in self.coordinator:
            user, equals, account = entry.partition("=")
            if not (user and equals and account):
                raise ConfigError(f"coordinator {entry!r}: give USER=ACCOUNT")
            accounts.setdefault(user, []).append(account)
        return {user: tuple(names) for user, names in accounts.items()}
