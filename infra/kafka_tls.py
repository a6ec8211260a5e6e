"""A test certificate authority and the certificates of a secured Kafka, made with openssl.

Every certificate is a PEM key (unencrypted, PKCS#8) and a PEM certificate named after its
common name, which is also the Kafka principal (`ssl.principal.mapping.rules` keeps the CN).
The broker gets a PKCS#12 keystore as well, which the JVM reads without extra libraries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from infra.apt import apt_install
from infra.service import ServiceError

KEY_BITS = "2048"
VALIDITY_DAYS = "3650"


def openssl(*args: str, cwd: Path) -> None:
    """Run openssl (installed from Debian if missing); ServiceError with its output if it fails."""
    if shutil.which("openssl") is None:
        apt_install(["openssl"])
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise ServiceError(f"openssl {' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}")


class CertificateAuthority:
    """A CA in directory `root` (ca.key, ca.pem) that signs certificates into the same folder."""

    def __init__(self, root: Path, name: str = "ca") -> None:
        self.root = root
        self.name = name
        self.key = root / f"{name}.key"
        self.pem = root / f"{name}.pem"

    def create(self, subject: str) -> None:
        """Make the CA unless it exists (its certificates stay valid across restarts)."""
        if self.key.exists() and self.pem.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", f"rsa:{KEY_BITS}", "-nodes", "-keyout", str(self.key),
                "-out", str(self.pem), "-days", VALIDITY_DAYS, "-subj", subject,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.root)
        self.key.chmod(0o600)

    def issue(self, common_name: str, *, days: int = int(VALIDITY_DAYS), server: bool = False,
              file_stem: str | None = None) -> tuple[Path, Path]:
        """(certificate, key) for CN=common_name, signed by this CA, valid for `days` (a
        negative number: already expired). server: also for 127.0.0.1 and localhost."""
        stem = file_stem or common_name
        key, csr, cert = (self.root / f"{stem}{suffix}" for suffix in (".key", ".csr", ".pem"))
        extensions = self.root / f"{stem}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
                 "extendedKeyUsage=serverAuth,clientAuth"]
        if server:
            lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
        extensions.write_text("\n".join(lines) + "\n")
        openssl("req", "-newkey", f"rsa:{KEY_BITS}", "-nodes", "-keyout", str(key), "-out",
                str(csr), "-subj", f"/O=sarchive test/CN={common_name}", cwd=self.root)
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.pem), "-CAkey", str(self.key),
                "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile",
                str(extensions), cwd=self.root)
        key.chmod(0o600)
        csr.unlink()
        extensions.unlink()
        return cert, key

    def pkcs12(self, cert: Path, key: Path, password: str) -> Path:
        """The certificate, its key and this CA's certificate as a PKCS#12 keystore."""
        store = cert.with_suffix(".p12")
        openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile",
                str(self.pem), "-name", cert.stem, "-out", str(store), "-passout",
                f"pass:{password}", cwd=self.root)
        store.chmod(0o600)
        return store
