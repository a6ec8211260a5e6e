"""A real single-node Elasticsearch 8.x for sarchive development and tests, from Maven Central jars.

The node is the unmodified Elasticsearch server (org.elasticsearch:elasticsearch) with the
transport-netty4 plugin for its HTTP and transport layers, started in-process by the small Java
launcher in infra/elasticsearch/ (built with Maven; see infra/elasticsearch/README.md).

Two configurations:

* ``ElasticsearchService(run_dir, repo)`` -- name "elasticsearch": security off, plain HTTP on
  127.0.0.1:${SARCHIVE_ES_PORT:-19200} (transport ${SARCHIVE_ES_TRANSPORT_PORT:-19300}),
  state under <run_dir>/elasticsearch/. env(): SARCHIVE_ES_URL.
* ``ElasticsearchService(run_dir, repo, secure=True)`` -- name "elasticsearch-secure", for the
  security tests and started only when named (`infra/services up elasticsearch-secure`): x-pack
  security on, HTTPS with a test CA made by keytool, basic auth against the file realm, on
  ${SARCHIVE_ES_SECURE_PORT:-19201} (transport +100), state under
  <run_dir>/elasticsearch-secure/. env(): SARCHIVE_ES_SECURE_URL, _USER, _PASSWORD, _CA.

Errors are ElasticsearchServiceError, a ServiceError, with the log tail.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.apt import apt_install
from infra.process import (
    file_lock,
    log_tail,
    pid_alive,
    pid_running,
    read_pid,
    spawn_detached,
    stop_pid,
    tcp_open,
    wait_until,
)
from infra.service import ServiceError


class ElasticsearchServiceError(ServiceError):
    """Elasticsearch could not be built, started or stopped; the message has the log tail."""


MAIN_CLASS = "org.sarchive.es.EsLauncher"
LOG_ROTATE_BYTES = 20 * 1024 * 1024


class ElasticsearchService:
    """One Elasticsearch 8.x node (see the module docstring)."""

    name = "elasticsearch"
    host = "127.0.0.1"
    default_port = 19200
    port_env = "SARCHIVE_ES_PORT"
    transport_port_env = "SARCHIVE_ES_TRANSPORT_PORT"
    start_timeout = float(os.environ.get("SARCHIVE_ES_START_TIMEOUT", "180"))
    stop_timeout = 60.0
    # Indexing 30 KB documents, a 1 GB heap flushed small segments (and merged them) often
    # enough to cost a fifth of the rate; production nodes have far more.
    heap = ("-Xms3g", "-Xmx3g")
    jvm_options = (
        "-XX:+UseG1GC",
        # Full tiered compilation (C2), as on a production node: with C1 only the node
        # started a few seconds sooner but indexed half as fast (bench/: R_es 250 -> 490 docs/s).
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-OmitStackTraceInFastThrow",
        "-Xss1m",
        "-Djava.awt.headless=true",
        "-Dfile.encoding=UTF-8",
        "-Djna.nosys=true",
        "-Des.networkaddress.cache.ttl=60",
        "-Des.networkaddress.cache.negative.ttl=10",
        "-Dio.netty.noUnsafe=true",
        "-Dio.netty.noKeySetOptimization=true",
        "-Dio.netty.recycler.maxCapacityPerThread=0",
        # our shutdown hook closes the node and still wants to log
        "-Dlog4j.shutdownHookEnabled=false",
        "-Dlog4j2.disable.jmx=true",
    )

    def __init__(self, run_dir: Path, repo: Path, *, secure: bool = False) -> None:
        self.secure = secure
        if secure:
            self.name = "elasticsearch-secure"
            self.default_port = 19201
            self.port_env = "SARCHIVE_ES_SECURE_PORT"
            self.transport_port_env = "SARCHIVE_ES_SECURE_TRANSPORT_PORT"
        self.src = repo / "infra" / "elasticsearch"
        self.target = self.src / "target"
        self.jar = self.target / "sarchive-es-launcher.jar"
        self.lib = self.target / "lib"
        self.lib_security = self.target / "lib-security"
        self.stamp = self.target / ".sarchive-build.sha256"
        self.base = run_dir / self.name
        self.data_dir = self.base / "data"
        self.logs_dir = self.base / "logs"
        self.config_dir = self.base / "config"
        self.tmp_dir = self.base / "tmp"
        self.log = self.logs_dir / "elasticsearch.log"
        self.pid_file = self.base / "pid"
        self.port = int(os.environ.get(self.port_env, str(self.default_port)))
        self.transport_port = int(os.environ.get(self.transport_port_env, str(self.port + 100)))
        # Distinguishes our java process (and this instance) from any other on the machine.
        self.marker = f"-Dsarchive.es.base={self.base}"
        # secure configuration: file-realm superuser and the test CA
        self.user = os.environ.get("SARCHIVE_ES_SECURE_USER", "sarchive")
        self.password = os.environ.get("SARCHIVE_ES_SECURE_PASSWORD", "sarchive-test-password")
        self.ca_pem = self.config_dir / "certs" / "ca.pem"
        self.node_p12 = self.config_dir / "certs" / "node.p12"
        self.keystore_password = "sarchive-test-keystore"

    # ------------------------------------------------------------------ Service protocol

    @property
    def url(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def install(self) -> None:
        """Build the launcher and collect its jars with Maven, unless already up to date."""
        if shutil.which("javac") is None or shutil.which("keytool") is None:
            apt_install(["openjdk-17-jdk-headless"])
        if shutil.which("mvn") is None:
            apt_install(["maven"])
        with file_lock(self.target / ".build.lock"):
            digest = self._source_digest()
            if self._built() and self.stamp.exists() and self.stamp.read_text() == digest:
                return
            print(f"{self.name}: building {self.src} with Maven", flush=True)
            # no stale jar versions left on the class path
            for stale in (self.lib, self.lib_security):
                shutil.rmtree(stale, ignore_errors=True)
            self.stamp.unlink(missing_ok=True)
            result = subprocess.run(
                ["mvn", "-B", "-q", "-f", str(self.src / "pom.xml"), "package"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not self._built():
                raise ElasticsearchServiceError(
                    f"{self.name}: mvn package failed (exit {result.returncode}):\n"
                    f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
                )
            self.stamp.write_text(digest)

    def up(self) -> None:
        if self.is_up():
            return
        pid = read_pid(self.pid_file)
        if pid_alive(pid, self.marker):
            # started but not answering yet (a concurrent `up`): wait for it
            self._wait_ready(pid)
            return
        for port in (self.port, self.transport_port):
            if tcp_open(self.host, port):
                raise ElasticsearchServiceError(
                    f"{self.name}: port {port} is taken by a process that is not ours (no live "
                    f"pid in {self.pid_file}); stop it or set {self.port_env} / "
                    f"{self.transport_port_env}"
                )
        if not self._built():
            self.install()
        for d in (self.data_dir, self.logs_dir, self.config_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self._make_certs()
        self._rotate_log()
        with self.log.open("a") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} sarchive: starting "
                f"{self.name} on {self.url} ===\n"
            )
        pid = spawn_detached(self._argv(), self.log, self.base, self._launcher_env())
        self.pid_file.write_text(f"{pid}\n")
        self._wait_ready(pid)

    def down(self) -> None:
        pid = read_pid(self.pid_file)
        try:
            stop_pid(pid, self.marker, self.stop_timeout, self.log_paths())
        except ServiceError as error:
            raise ElasticsearchServiceError(f"{self.name}: {error}") from error
        self.pid_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        if not pid_alive(read_pid(self.pid_file), self.marker):
            return False
        return self._health_ok(timeout=3.0)

    def env(self) -> dict[str, str]:
        if not self.secure:
            return {"SARCHIVE_ES_URL": self.url}
        return {
            "SARCHIVE_ES_SECURE_URL": self.url,
            "SARCHIVE_ES_SECURE_USER": self.user,
            "SARCHIVE_ES_SECURE_PASSWORD": self.password,
            "SARCHIVE_ES_SECURE_CA": str(self.ca_pem),
        }

    def log_paths(self) -> list[Path]:
        return [self.log]

    def state_paths(self) -> list[Path]:
        return [self.base]

    # ------------------------------------------------------------------ helpers for tests

    def request(
        self, method: str, path: str, body: object | None = None, timeout: float = 10.0
    ) -> tuple[int, object]:
        """One HTTP request to the node (auth and CA handled); (status, parsed JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        context = None
        if self.secure:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
            context = ssl.create_default_context(cafile=str(self.ca_pem))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    # ------------------------------------------------------------------ internals

    def _built(self) -> bool:
        return (
            self.jar.exists() and self.lib.is_dir() and any(self.lib.glob("elasticsearch-8*.jar"))
        )

    def _source_digest(self) -> str:
        h = hashlib.sha256()
        files = [self.src / "pom.xml", *sorted((self.src / "src").rglob("*"))]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(self.src)).encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()

    def _java(self) -> str:
        configured = os.environ.get("SARCHIVE_ES_JAVA")
        if configured:
            return configured
        found = shutil.which("java")
        if found is None:
            raise ElasticsearchServiceError(f"{self.name}: no java on PATH (Java 17+ needed)")
        return found

    def _classpath(self) -> str:
        parts = [str(self.jar), f"{self.lib}/*"]
        if self.secure:
            parts.append(f"{self.lib_security}/*")
        return ":".join(parts)

    def _argv(self) -> list[str]:
        extra = os.environ.get("SARCHIVE_ES_JAVA_OPTS", "").split()
        return [
            self._java(),
            *self.heap,
            *self.jvm_options,
            f"-Djava.io.tmpdir={self.tmp_dir}",
            self.marker,
            *extra,
            "-cp",
            self._classpath(),
            MAIN_CLASS,
        ]

    def _launcher_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SARCHIVE_ES_BASE=str(self.base),
            SARCHIVE_ES_CONFIG=str(self.config_dir),
            SARCHIVE_ES_HOST=self.host,
            SARCHIVE_ES_PORT=str(self.port),
            SARCHIVE_ES_TRANSPORT_PORT=str(self.transport_port),
            SARCHIVE_ES_NODE_NAME=self.name,
        )
        env.pop("SARCHIVE_ES_SECURITY", None)
        if self.secure:
            certs = self.config_dir / "certs"
            env["SARCHIVE_ES_SECURITY"] = "1"
            env["SARCHIVE_ES_USERS"] = f"{self.user}:{self.password}:superuser"
            env["SARCHIVE_ES_SETTINGS"] = "\n".join(
                [
                    "xpack.security.enabled=true",
                    "xpack.security.http.ssl.enabled=true",
                    f"xpack.security.http.ssl.keystore.path={self.node_p12}",
                    f"xpack.security.http.ssl.truststore.path={certs / 'truststore.p12'}",
                    "xpack.security.transport.ssl.enabled=true",
                    "xpack.security.transport.ssl.verification_mode=certificate",
                    f"xpack.security.transport.ssl.keystore.path={self.node_p12}",
                    f"xpack.security.transport.ssl.truststore.path={certs / 'truststore.p12'}",
                    "xpack.security.authc.realms.file.file1.order=0",
                    "xpack.security.authc.realms.native.native1.order=1",
                ]
            )
            env["SARCHIVE_ES_SECURE_SETTINGS"] = "\n".join(
                [
                    f"xpack.security.http.ssl.keystore.secure_password={self.keystore_password}",
                    f"xpack.security.http.ssl.truststore.secure_password={self.keystore_password}",
                    f"xpack.security.transport.ssl.keystore.secure_password={self.keystore_password}",
                    f"xpack.security.transport.ssl.truststore.secure_password={self.keystore_password}",
                ]
            )
        else:
            env.pop("SARCHIVE_ES_SETTINGS", None)
            env.pop("SARCHIVE_ES_SECURE_SETTINGS", None)
            env.pop("SARCHIVE_ES_USERS", None)
        return env

    def _health_ok(self, timeout: float) -> bool:
        try:
            status, body = self.request(
                "GET", "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=timeout
            )
        except (OSError, ssl.SSLError, ValueError):
            return False
        return (
            status == 200 and isinstance(body, dict) and body.get("status") in ("yellow", "green")
        )

    def _wait_ready(self, pid: int | None) -> None:
        def ready() -> bool:
            if not pid_running(pid):
                raise ElasticsearchServiceError(
                    f"{self.name}: the node (pid {pid}) exited during startup\n"
                    f"{log_tail(self.log)}"
                )
            return self._health_ok(timeout=3.0)

        if wait_until(ready, self.start_timeout, 0.25):
            return
        tail = log_tail(self.log)
        with contextlib.suppress(ElasticsearchServiceError):
            self.down()
        raise ElasticsearchServiceError(
            f"{self.name}: not ready (GET /_cluster/health?wait_for_status=yellow) within "
            f"{self.start_timeout:.0f} s on {self.url}; stopped it\n{tail}"
        )

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log.stat().st_size > LOG_ROTATE_BYTES:
                self.log.replace(self.log.with_suffix(".log.1"))

    def _keytool(self, *args: str, stdin: str | None = None) -> str:
        keytool = shutil.which("keytool")
        if keytool is None:
            raise ElasticsearchServiceError(f"{self.name}: keytool not found (needs a JDK)")
        result = subprocess.run(
            [keytool, *args], input=stdin, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ElasticsearchServiceError(
                f"{self.name}: keytool {' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _make_certs(self) -> None:
        """A test CA and a node certificate for 127.0.0.1/localhost, once (kept across runs)."""
        certs = self.config_dir / "certs"
        if self.ca_pem.exists() and self.node_p12.exists() and (certs / "truststore.p12").exists():
            return
        shutil.rmtree(certs, ignore_errors=True)
        certs.mkdir(parents=True)
        pw = self.keystore_password
        ca_p12, node_p12, trust = certs / "ca.p12", self.node_p12, certs / "truststore.p12"
        ca_file, node_chain = certs / "ca.pem", certs / "node-chain.pem"

        def store(path: Path) -> list[str]:
            return ["-keystore", str(path), "-storetype", "PKCS12", "-storepass", pw]

        def new_key(path: Path, alias: str, dname: str, *ext: str) -> None:
            self._keytool(
                *("-genkeypair", "-alias", alias, "-keyalg", "RSA", "-keysize", "2048"),
                *("-dname", dname, "-validity", "3650", *ext, "-keypass", pw),
                *store(path),
            )

        def import_cert(path: Path, alias: str, pem: Path) -> None:
            self._keytool(
                "-importcert", "-noprompt", "-alias", alias, "-file", str(pem), *store(path)
            )

        new_key(ca_p12, "ca", "CN=sarchive test CA", "-ext", "bc:c")
        ca_cert = self._keytool("-exportcert", "-rfc", "-alias", "ca", *store(ca_p12))
        new_key(node_p12, "node", "CN=localhost")
        csr = self._keytool("-certreq", "-alias", "node", *store(node_p12))
        signed = self._keytool(
            *("-gencert", "-rfc", "-alias", "ca", "-validity", "3650", *store(ca_p12)),
            *("-ext", "SAN=ip:127.0.0.1,dns:localhost"),
            *("-ext", "KU=digitalSignature,keyEncipherment", "-ext", "EKU=serverAuth,clientAuth"),
            stdin=csr,
        )
        ca_file.write_text(ca_cert)
        node_chain.write_text(signed + ca_cert)
        import_cert(node_p12, "ca", ca_file)
        import_cert(node_p12, "node", node_chain)  # the CA's reply replaces the self-signed cert
        import_cert(trust, "ca", ca_file)
