"""Elasticsearch connection settings shared by the writer (sarchive-es) and the reader
(`sarchive`, sarchive-web): the same flags, SARCHIVE_* variables and TOML keys, checked the
same way, and the TLS context they describe. Neither the `elasticsearch` client nor any HTTP
library is imported here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from runtime.config import ConfigError, secret_value, setting

if TYPE_CHECKING:
    import ssl

ES_URL_HELP = ("Elasticsearch node URL, http:// or https:// (repeatable: several nodes of one"
               " cluster)")


@dataclasses.dataclass(frozen=True)
class EsConnectionSettings:
    es_url: tuple[str, ...] = setting((), help=ES_URL_HELP)
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

    def check_es_connection(self) -> None:
        """ConfigError unless every URL is http(s) without credentials in it, the CA file goes
        with an https URL and the credentials are one kind, complete. A subclass's
        __post_init__ calls it (dataclasses do not chain __post_init__ through several bases)."""
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
        if self.es_api_key and self.es_user:
            raise ConfigError("give either es_api_key or es_user, not both")
        if self.es_password is not None and self.es_password_file is not None:
            raise ConfigError("give either es_password or es_password_file, not both")
        if (self.es_password is not None or self.es_password_file is not None) \
                and not self.es_user:
            raise ConfigError("es_password needs es_user")

    def es_password_value(self) -> str | None:
        """The password from --es-password or the first line of --es-password-file."""
        return secret_value(self.es_password, self.es_password_file, "es_password_file")

    def es_tls_context(self) -> ssl.SSLContext:
        """The TLS context of the https:// nodes: trusting es_ca_certs (default: the system's
        CAs), verifying as es_verify_certs says. ConfigError naming es_ca_certs if that file
        cannot be read or holds no certificate: without it every connection would fail, and a
        service would retry forever what only its configuration can fix."""
        import ssl  # noqa: PLC0415 -- ssl only where https:// nodes are read (sarchive's start-up)

        cafile = None if self.es_ca_certs is None else str(self.es_ca_certs)
        try:
            context = ssl.create_default_context(cafile=cafile)
        except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
            raise ConfigError(f"es_ca_certs {self.es_ca_certs}: cannot load it:"
                              f" {exc.strerror or exc}") from exc
        if not self.es_verify_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def identity(self) -> str:
        """Who we are to Elasticsearch, for error messages (never the secret)."""
        if self.es_api_key:
            return "with an API key"
        if self.es_user:
            return f"as user {self.es_user!r}"
        return "without credentials"
