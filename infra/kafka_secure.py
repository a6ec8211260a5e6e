"""The secured test broker, "kafka-secure": one KRaft node as sites run Kafka, started only
when named (`infra/services up kafka-secure`), beside and never instead of the dev broker.

Listeners, on loopback:
* SASL_SSL with SCRAM-SHA-512 on ${SARCHIVE_KAFKA_SECURE_PORT:-19192};
* SSL with client certificates (mutual TLS) on that port + 1; the controller on + 2.

At first set-up it makes, under <run dir>/kafka-secure/credentials/: a test CA (ca.pem), a
certificate and key (<name>.pem, <name>.key) and a SCRAM password (<name>.password) for every
principal of PRINCIPALS; the SCRAM users are created when the KRaft storage is formatted.
The StandardAuthorizer denies whatever no ACL allows; "admin" and "broker" are super users,
the others get their ACLs from whoever uses them (docs/operations.md lists them).
"""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path

from infra.kafka import KafkaService
from infra.kafka_metadata import kafka_metadata_brokers
from infra.kafka_tls import CertificateAuthority
from infra.service import ServiceError

# admin: the tests' and operators' super user; the others: one per sarchive service.
PRINCIPALS = ("admin", "producer", "archive", "elastic")
SCRAM_MECHANISM = "SCRAM-SHA-512"


class SecureKafkaService(KafkaService):
    name = "kafka-secure"
    template = "server-secure.properties.template"
    port_env, default_port = "SARCHIVE_KAFKA_SECURE_PORT", 19192
    controller_port_env, controller_offset = "SARCHIVE_KAFKA_SECURE_CONTROLLER_PORT", 2
    keystore_password = "sarchive-test-keystore"

    def __init__(self, run_dir: Path, repo: Path) -> None:
        super().__init__(run_dir, repo)
        self.credentials = self.home / "credentials"
        self.ca = CertificateAuthority(self.credentials)
        self.mtls_port = self.port + 1

    @property
    def bootstrap(self) -> str:
        """The SASL_SSL listener."""
        return f"{self.host}:{self.port}"

    @property
    def mtls_bootstrap(self) -> str:
        return f"{self.host}:{self.mtls_port}"

    def cert(self, principal: str) -> Path:
        return self.credentials / f"{principal}.pem"

    def key(self, principal: str) -> Path:
        return self.credentials / f"{principal}.key"

    def password_file(self, principal: str) -> Path:
        return self.credentials / f"{principal}.password"

    def up(self) -> None:
        if not self.is_up():
            self._make_credentials()
        super().up()

    def env(self) -> dict[str, str]:
        return {
            "SARCHIVE_KAFKA_SECURE_SASL_BOOTSTRAP": self.bootstrap,
            "SARCHIVE_KAFKA_SECURE_MTLS_BOOTSTRAP": self.mtls_bootstrap,
            "SARCHIVE_KAFKA_SECURE_CA": str(self.ca.pem),
            "SARCHIVE_KAFKA_SECURE_CREDENTIALS": str(self.credentials),
        }

    # -- hooks of KafkaService

    def _answers(self) -> bool:
        """A metadata request over mutual TLS as the broker's own (super user) principal."""
        context = ssl.create_default_context(cafile=str(self.ca.pem))
        context.load_cert_chain(self.cert("broker"), self.key("broker"))
        try:
            return bool(kafka_metadata_brokers(self.host, self.mtls_port, timeout=2.0,
                                               tls=context))
        except OSError:
            return False

    def _template_values(self) -> dict[str, object]:
        return {**super()._template_values(), "sasl_port": self.port,
                "mtls_port": self.mtls_port, "ca_pem": self.ca.pem,
                "keystore": self.credentials / "broker.p12",
                "keystore_password": self.keystore_password}

    def _format_options(self) -> list[str]:
        options = []
        for principal in PRINCIPALS:
            password = self.password_file(principal).read_text().strip()
            options += ["--add-scram",
                        f"{SCRAM_MECHANISM}=[name={principal},password={password}]"]
        return options

    def _make_credentials(self) -> None:
        """The CA, the broker's keystore, each principal's certificate and password: once,
        kept across restarts (the SCRAM users in the formatted storage use the passwords)."""
        self.ca.create("/O=sarchive test/CN=sarchive test Kafka CA")
        if not (self.credentials / "broker.p12").exists():
            cert, key = self.ca.issue("broker", server=True)
            self.ca.pkcs12(cert, key, self.keystore_password)
        for principal in PRINCIPALS:
            if not self.cert(principal).exists():
                self.ca.issue(principal)
            password = self.password_file(principal)
            if not password.exists():
                if (self.data_dir / "meta.properties").exists():
                    # The formatted storage holds the SCRAM users of the lost passwords.
                    raise ServiceError(f"{self.name}: {password} is missing but the storage"
                                       f" is formatted; run `infra/services clean {self.name}`")
                password.write_text(secrets.token_urlsafe(18) + "\n")
                os.chmod(password, 0o600)
