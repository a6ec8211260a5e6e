#!/usr/bin/env python3
"""Real local services for sarchive development and tests: Kafka, Slurm (and Elasticsearch).

Usage: infra/services up|down|status|env|install|logs [kafka|slurm|elasticsearch ...]

Standard library only: this runs on a fresh machine before the project's venv exists.
All state lives in ${SARCHIVE_RUN_DIR:-<repo>/.run}; `down` keeps it, so `up` again resumes
with the same Kafka data and Slurm job ids.

Other modules in infra/ plug into the registry (see `registry()`): they may
`from services import Service, ServiceError, run_dir, repo_root, log_tail, ...`, and get this
very module whether it was started as a script or loaded by tests/integration/conftest.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

# Run as a script this module is "__main__"; make `import services` from a plugged-in module
# return this same module, or it would get a second copy whose ServiceError we cannot catch.
sys.modules.setdefault("services", sys.modules[__name__])

INFRA_DIR = Path(__file__).resolve().parent
LOG_TAIL_LINES = 60


# --------------------------------------------------------------------------- shared helpers


class ServiceError(Exception):
    """A service could not be installed, started or stopped; the message carries its log tail."""


class Service(Protocol):
    name: str

    def install(self) -> None: ...  # idempotent prerequisites

    def up(self) -> None: ...  # idempotent, waits until ready, raises ServiceError with log tail

    def down(self) -> None: ...

    def is_up(self) -> bool: ...

    def env(self) -> dict[str, str]: ...

    def log_paths(self) -> list[Path]: ...


def repo_root() -> Path:
    return INFRA_DIR.parent


def contract_message_bytes() -> int:
    """MAX_MESSAGE_BYTES of schemas/limits.py, loaded by path: that module imports nothing,
    and infra/ runs before the project (and its dependencies) is installed."""
    spec = importlib.util.spec_from_file_location(
        "sarchive_contract_limits", repo_root() / "schemas" / "limits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.MAX_MESSAGE_BYTES)


def run_dir() -> Path:
    configured = os.environ.get("SARCHIVE_RUN_DIR")
    return Path(configured).resolve() if configured else repo_root() / ".run"


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """Last n lines of a log, framed with its path, for error messages."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return f"--- {path}: (no such file)"
    body = "\n".join(lines) if lines else "(empty)"
    return f"--- last {len(lines)} lines of {path}:\n{body}\n--- end of {path}"


def service_error(message: str, logs: Sequence[Path], n: int = LOG_TAIL_LINES) -> ServiceError:
    tails = "\n".join(log_tail(p, n) for p in logs)
    return ServiceError(f"{message}\n{tails}" if tails else message)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def pid_running(pid: int | None) -> bool:
    """True while the process exists and is not a zombie (exited, not reaped yet)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}


def pid_alive(pid: int | None, cmd_marker: str) -> bool:
    """True if pid runs and its command line contains cmd_marker.

    The marker guards against a stale pid file whose number now belongs to another process.
    Use it only to decide whether a pid is ours: while a process execs or exits, its cmdline
    reads empty for a moment, so waiting for start or exit must use pid_running instead.
    """
    if not pid_running(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmd_marker in cmdline.replace(b"\0", b" ").decode(errors="replace")


def spawn_detached(
    argv: Sequence[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start argv in its own session, detached from us, output appended to log; return its pid.

    env replaces the environment of argv (None: inherit ours).

    A shell backgrounds the command and exits at once, so the daemon is re-parented to init
    rather than left as our child: it survives the caller (pytest, make) and never lingers as
    our zombie. setsid gives it a new session so the caller's Ctrl-C or hang-up cannot reach it.
    """
    script = 'log=$1; shift; setsid nohup "$@" </dev/null >>"$log" 2>&1 & echo $!'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(log), *argv],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def stop_pid(
    pid: int | None, cmd_marker: str, timeout: float = 30.0, logs: Sequence[Path] = ()
) -> None:
    """SIGTERM, wait up to timeout for a clean shutdown, then SIGKILL.

    Returns only once the process is gone, so its ports and lock files are free for an `up`;
    raises ServiceError, with the tails of logs, if even SIGKILL does not end it.
    """
    if pid is None or not pid_alive(pid, cmd_marker):
        return
    os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not pid_running(pid), timeout, 0.2):
        return
    print(f"pid {pid} ({cmd_marker}) ignored SIGTERM for {timeout:.0f} s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: not pid_running(pid), 10, 0.2):
        raise service_error(f"pid {pid} ({cmd_marker}) survived SIGKILL", logs)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path (created with its folder if missing) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> None:
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    path.chmod(mode)


# --------------------------------------------------------------------------- installers

_apt_updated = False


def dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def apt_install(packages: Sequence[str]) -> None:
    """Install the Debian packages that are missing; apt-get update at most once per run."""
    global _apt_updated  # noqa: PLW0603 - one update per process is the point
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServiceError(
            f"missing Debian packages {missing}; run `infra/services install` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    try:
        with _no_service_autostart():
            if not _apt_updated:
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
                _apt_updated = True
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                check=True,
                env=env,
            )
    except subprocess.CalledProcessError as error:
        raise ServiceError(
            f"`{' '.join(error.cmd)}` failed with exit code {error.returncode}"
        ) from error


@contextlib.contextmanager
def _no_service_autostart() -> Iterator[None]:
    """Keep Debian maintainer scripts from starting the system slurmctld/slurmd/munged.

    We run our own daemons from the run dir; the packaged ones would start without a
    slurm.conf, fail, and make `apt-get install` fail with them. policy-rc.d exit code 101
    means "action forbidden". Container images often ship one already; then leave it alone.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# temporary, written by sarchive infra/services.py\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


# --------------------------------------------------------------------------- Kafka


def kafka_metadata_brokers(
    host: str, port: int, timeout: float = 3.0
) -> list[tuple[int, str, int]]:
    """Send a real Kafka Metadata request (v4, stdlib only) and return the brokers it lists.

    An open port is not enough: the broker accepts connections before it has joined its
    KRaft quorum. A metadata response naming a broker means it serves clients.
    Kafka 4 dropped Metadata v0-v3, and v4 is the newest version without tagged fields.
    """
    client_id = b"sarchive-infra"
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body = struct.pack(">ib", -1, 0)  # all topics (null array), no auto-creation
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        data = _recv_exact(sock, size)
    try:
        return _parse_metadata_brokers(data, correlation_id=7)
    except (struct.error, UnicodeDecodeError) as error:
        # A half-started broker must read as "not ready", like a refused connection.
        raise OSError(f"malformed metadata response: {error}") from error


def _parse_metadata_brokers(data: bytes, correlation_id: int) -> list[tuple[int, str, int]]:
    """Response header v0 + MetadataResponse v4, up to and including the brokers array."""
    got_id, _throttle_ms, count = struct.unpack_from(">iii", data, 0)
    if got_id != correlation_id:
        raise OSError(f"unexpected correlation id {got_id}")
    offset = 12
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        broker_host = data[offset : offset + host_len].decode()
        offset += host_len
        broker_port, rack_len = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)  # rack is a nullable string: length -1 means null
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


class KafkaService:
    """One Apache Kafka 4 broker in KRaft combined mode, run from jars fetched by Maven."""

    name = "kafka"
    host = "127.0.0.1"
    start_timeout = 120.0  # a cold JVM on 2 busy cores can take a while
    stop_timeout = 30.0
    jvm_options = (
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
    )
    main_class = "kafka.Kafka"

    def __init__(self, run_dir: Path, repo: Path) -> None:
        self.home = run_dir / "kafka"
        self.data_dir = self.home / "data"
        self.config = self.home / "server.properties"
        self.log = self.home / "kafka.log"
        self.pid_file = self.home / "pid"
        self.src = repo / "infra" / "kafka"
        # Jars belong to the checkout (they follow its pom.xml), not to one run dir.
        self.lib = self.src / "target" / "lib"
        self.port = int(os.environ.get("SARCHIVE_KAFKA_PORT", "19092"))
        self.controller_port = int(
            os.environ.get("SARCHIVE_KAFKA_CONTROLLER_PORT", str(self.port + 1))
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # -- Service protocol

    def install(self) -> None:
        if shutil.which("java") is None:
            apt_install(["openjdk-17-jre-headless"])
        stamp = self.lib / ".pom.sha256"
        pom = self.src / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            return
        if shutil.which("mvn") is None:
            apt_install(["maven"])
        print(f"kafka: fetching broker jars with Maven into {self.lib}", flush=True)
        shutil.rmtree(self.lib, ignore_errors=True)  # no stale versions left on the classpath
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib}",
            ],
            capture_output=True,
            check=False,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"kafka: mvn dependency:copy-dependencies failed:\n"
                f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
            )
        stamp.write_text(digest)

    def up(self) -> None:
        if self.is_up():
            return
        if pid_alive(read_pid(self.pid_file), self.main_class):
            # Running but not answering yet (e.g. a concurrent `up`): just wait for it.
            self._wait_ready(read_pid(self.pid_file))
            return
        if tcp_open(self.host, self.port):
            raise ServiceError(
                f"kafka: port {self.port} is taken by a process that is not ours "
                f"(no live pid in {self.pid_file}); stop it or set SARCHIVE_KAFKA_PORT"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage_once()
        pid = spawn_detached(self._java(self.main_class, str(self.config)), self.log, self.home)
        self.pid_file.write_text(f"{pid}\n")
        self._wait_ready(pid)

    def down(self) -> None:
        stop_pid(read_pid(self.pid_file), self.main_class, self.stop_timeout, [self.log])
        self.pid_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        if not pid_alive(read_pid(self.pid_file), self.main_class):
            return False
        try:
            return bool(kafka_metadata_brokers(self.host, self.port, timeout=2.0))
        except OSError:
            return False

    def env(self) -> dict[str, str]:
        return {"SARCHIVE_KAFKA_BOOTSTRAP": self.bootstrap}

    def log_paths(self) -> list[Path]:
        return [self.log]

    # -- internals

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.src / 'log4j2.xml'}",
            # kafka.logs.dir is where the broker puts its own auxiliary logs, if any.
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            f"{self.lib}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> None:
        template = string.Template((self.src / "server.properties.template").read_text())
        write_if_changed(
            self.config,
            template.substitute(
                port=self.port, controller_port=self.controller_port, data_dir=self.data_dir,
                max_message_bytes=contract_message_bytes(),
            ),
        )

    def _format_storage_once(self) -> None:
        """Format the KRaft log dir on first start only: later starts must keep the data."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config),
        )
        with self.log.open("a") as log:
            log.write(f"=== formatting {self.data_dir} with cluster id {cluster_id}\n")
            log.flush()
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, check=False
            )
        if result.returncode != 0:
            raise service_error("kafka: formatting the storage directory failed", [self.log])

    def _wait_ready(self, pid: int | None) -> None:
        def ready() -> bool:
            if not pid_running(pid):
                raise service_error(f"kafka: broker (pid {pid}) exited during start-up", [self.log])
            try:
                return bool(kafka_metadata_brokers(self.host, self.port, timeout=2.0))
            except OSError:
                return False

        if not wait_until(ready, self.start_timeout, 0.5):
            raise service_error(
                f"kafka: broker (pid {pid}) did not answer a metadata request on "
                f"{self.bootstrap} within {self.start_timeout:.0f} s",
                [self.log],
            )


# --------------------------------------------------------------------------- Slurm


class SlurmService:
    """A one-node Slurm cluster (slurmctld + slurmd) with its own munged, all in the run dir."""

    name = "slurm"
    cluster = "sarchive-dev"
    addr = "127.0.0.1"
    packages = ("slurmctld", "slurmd", "slurm-client", "munge")
    start_timeout = 60.0
    stop_timeout = 30.0
    # unix socket paths are limited to 108 bytes (sun_path); leave room for suffixes.
    max_socket_path = 100

    def __init__(self, run_dir: Path, repo: Path) -> None:
        self.home = run_dir / "slurm"
        self.state_dir = self.home / "state"
        self.spool_dir = self.home / "spool"
        self.tmp_dir = self.home / "tmp"
        self.conf = self.home / "slurm.conf"
        self.munge_dir = run_dir / "munge"
        self.munge_key = self.munge_dir / "munge.key"
        self.munge_log = self.munge_dir / "munged.log"
        self.munge_pid = self.munge_dir / "munged.pid"
        self.munge_socket = self._socket_path(self.munge_dir / "munge.socket")
        self.slurmctld_log = self.home / "slurmctld.log"
        self.slurmd_log = self.home / "slurmd.log"
        self.slurmctld_pid = self.home / "slurmctld.pid"
        self.slurmd_pid = self.home / "slurmd.pid"
        # Daemon stderr before their log file is open (bad config, missing plugin) lands here.
        self.launch_log = self.home / "launch.log"
        self.template = repo / "infra" / "slurm" / "slurm.conf.template"
        self.slurmctld_port = int(os.environ.get("SARCHIVE_SLURMCTLD_PORT", "16817"))
        self.slurmd_port = int(os.environ.get("SARCHIVE_SLURMD_PORT", "16818"))
        self.node = socket.gethostname().split(".")[0]

    # -- Service protocol

    def install(self) -> None:
        apt_install(self.packages)

    def up(self) -> None:
        if self.is_up():
            return
        for directory in (self.home, self.state_dir, self.spool_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.launch_log.write_text("")  # only this attempt's launch output is of interest
        self._munge_up()
        self._write_config()
        self._daemon_up("slurmctld", self.slurmctld_pid, ["slurmctld", "-f", str(self.conf)])
        self._wait(
            "slurmctld to answer `scontrol ping`",
            self._ctld_answers,
            [self.slurmctld_log],
            watch=[(self.slurmctld_pid, "slurmctld")],
        )
        self._daemon_up(
            "slurmd", self.slurmd_pid, ["slurmd", "-f", str(self.conf), "-N", self.node]
        )
        self._wait(
            f"node {self.node} to become idle",
            self._node_ready,
            [self.slurmd_log, self.slurmctld_log],
            watch=[(self.slurmctld_pid, "slurmctld"), (self.slurmd_pid, "slurmd")],
        )

    def down(self) -> None:
        for pid_file, marker in (
            (self.slurmd_pid, "slurmd"),
            (self.slurmctld_pid, "slurmctld"),
            (self.munge_pid, "munged"),
        ):
            stop_pid(read_pid(pid_file), marker, self.stop_timeout, self.log_paths())
            pid_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        return (
            pid_alive(read_pid(self.munge_pid), "munged")
            and pid_alive(read_pid(self.slurmctld_pid), "slurmctld")
            and pid_alive(read_pid(self.slurmd_pid), "slurmd")
            and tcp_open(self.addr, self.slurmctld_port)
        )

    def env(self) -> dict[str, str]:
        return {
            "SLURM_CONF": str(self.conf),
            "SARCHIVE_SLURM_STATE": str(self.state_dir),
            "SARCHIVE_SLURM_CLUSTER": self.cluster,
        }

    def log_paths(self) -> list[Path]:
        return [self.slurmctld_log, self.slurmd_log, self.munge_log, self.launch_log]

    # -- munge

    def _socket_path(self, preferred: Path) -> Path:
        if len(str(preferred)) <= self.max_socket_path:
            return preferred
        # A deep checkout would overflow sun_path: fall back to a short, per-run-dir path.
        digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
        return Path(f"/tmp/sarchive-munge-{digest}/munge.socket")

    def _munge_up(self) -> None:
        if pid_alive(read_pid(self.munge_pid), "munged") and self._munge_works():
            return
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        self.munge_socket.parent.mkdir(parents=True, exist_ok=True)
        if not self.munge_key.exists():
            # Any 1 KiB of randomness is a valid key; no need for mungekey or dd.
            self.munge_key.write_bytes(os.urandom(1024))
        self.munge_key.chmod(0o600)
        self._run_daemon_command(
            "munged",
            [
                "munged",
                # --force: munged refuses paths it deems insecure (e.g. a world-readable
                # /work ancestor) and existing sockets from an unclean stop; this is a dev box.
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}",
                f"--log-file={self.munge_log}",
                f"--pid-file={self.munge_pid}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
                "--num-threads=2",
            ],
        )
        self._wait(
            "munged to issue credentials",
            self._munge_works,
            [self.munge_log],
            watch=[(self.munge_pid, "munged")],
        )

    def _munge_works(self) -> bool:
        try:
            cred = subprocess.run(
                ["munge", "-n", "-S", str(self.munge_socket)],
                capture_output=True,
                timeout=5,
                check=False,
            )
            if cred.returncode != 0:
                return False
            check = subprocess.run(
                ["unmunge", "-S", str(self.munge_socket)],
                input=cred.stdout,
                capture_output=True,
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return check.returncode == 0

    # -- slurm daemons

    def _write_config(self) -> None:
        template = string.Template(self.template.read_text())
        write_if_changed(
            self.conf,
            template.substitute(
                cluster=self.cluster,
                host=self.node,
                addr=self.addr,
                node=self.node,
                node_hardware=self._node_hardware(),
                slurmctld_port=self.slurmctld_port,
                slurmd_port=self.slurmd_port,
                munge_socket=self.munge_socket,
                state_dir=self.state_dir,
                spool_dir=self.spool_dir,
                slurm_dir=self.home,
                tmp_dir=self.tmp_dir,
            ),
        )
        write_if_changed(self.home / "plugstack.conf", "# no SPANK plugins in the dev cluster\n")

    def _node_hardware(self) -> str:
        """CPU layout and memory as `slurmd -C` detects them on this machine."""
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
        keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        hardware = [f"{k}={fields[k]}" for k in keys if k in fields]
        # Leave the OS some headroom: a node claiming more memory than it has is drained.
        memory = max(int(int(fields.get("RealMemory", "1024")) * 0.9), 512)
        return " ".join([*hardware, f"RealMemory={memory}"])

    def _daemon_up(self, name: str, pid_file: Path, argv: list[str]) -> None:
        if pid_alive(read_pid(pid_file), name):
            return
        self._run_daemon_command(name, argv)
        # The daemon forks; its child writes the pid file once it runs.
        if not wait_until(lambda: pid_alive(read_pid(pid_file), name), 20):
            raise service_error(f"slurm: {name} did not start", [*self.log_paths()])

    def _run_daemon_command(self, name: str, argv: list[str]) -> None:
        """Run a self-daemonising command; its pre-fork stderr goes to launch.log."""
        self.launch_log.parent.mkdir(parents=True, exist_ok=True)
        with self.launch_log.open("a") as log:
            log.write(f"=== {time.strftime('%F %T')} {' '.join(argv)}\n")
            log.flush()
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._slurm_env(),
                timeout=60,
                check=False,
            )
        if result.returncode != 0:
            raise service_error(
                f"slurm: `{' '.join(argv)}` exited with {result.returncode}", self.log_paths()
            )

    def _slurm_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _client(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=self._slurm_env(),
            timeout=30,
            check=False,
        )

    def _ctld_answers(self) -> bool:
        return "is UP" in self._client("scontrol", "ping").stdout

    def _node_ready(self) -> bool:
        state = self._client("sinfo", "-h", "-N", "-n", self.node, "-o", "%T").stdout.strip()
        if state.endswith("*"):  # "*": slurmctld cannot reach slurmd (yet)
            return False
        if state in {"idle", "mixed", "allocated", "completing"}:
            return True
        if state.startswith(("down", "drain")):
            # slurmd registered but the node kept an old DOWN/DRAIN state: clear it.
            self._client("scontrol", "update", f"nodename={self.node}", "state=resume")
        return False

    def _wait(
        self,
        what: str,
        predicate: Callable[[], bool],
        logs: list[Path],
        watch: Sequence[tuple[Path, str]],
    ) -> None:
        """Wait for predicate; fail at once, not after the timeout, if a watched daemon dies."""

        def ready() -> bool:
            for pid_file, name in watch:
                if not pid_running(read_pid(pid_file)):
                    raise service_error(
                        f"slurm: {name} exited while waiting for {what}", [*logs, self.launch_log]
                    )
            return predicate()

        if not wait_until(ready, self.start_timeout, 0.5):
            raise service_error(
                f"slurm: timed out after {self.start_timeout:.0f} s waiting for {what}",
                [*logs, self.launch_log],
            )


# --------------------------------------------------------------------------- registry


class BrokenService:
    """Stands in for a plugged-in service whose module fails to import.

    Asking for it raises loudly, while `up kafka` keeps working during a colleague's edit.
    """

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self._error = error

    def _fail(self) -> None:
        raise ServiceError(f"{self.name}: its module failed to import:\n{self._error}")

    def install(self) -> None:
        self._fail()

    def up(self) -> None:
        self._fail()

    def down(self) -> None:
        self._fail()

    def is_up(self) -> bool:
        return False

    def env(self) -> dict[str, str]:
        self._fail()
        return {}

    def log_paths(self) -> list[Path]:
        return []


def registry(run: Path | None = None, repo: Path | None = None) -> list[Service]:
    """All services, in start order: Kafka, Slurm, then Elasticsearch if infra/ provides it."""
    run = run or run_dir()
    repo = repo or repo_root()
    services: list[Service] = [KafkaService(run, repo), SlurmService(run, repo)]
    if (INFRA_DIR / "elasticsearch_service.py").exists():
        services.append(
            _load_plugin(
                "elasticsearch", "elasticsearch_service", "ElasticsearchService", run, repo
            )
        )
    return services


def _load_plugin(name: str, module: str, cls: str, run: Path, repo: Path) -> Service:
    if str(INFRA_DIR) not in sys.path:
        sys.path.insert(0, str(INFRA_DIR))
    try:
        factory = getattr(importlib.import_module(module), cls)
        service: Service = factory(run, repo)
    except Exception:  # any failure in a plugin must surface as a BrokenService, not a crash
        return BrokenService(name, traceback.format_exc())
    return service


def select(services: list[Service], names: Sequence[str]) -> list[Service]:
    if not names:
        return services
    by_name = {s.name: s for s in services}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown service(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- start / stop


@contextlib.contextmanager
def service_lock(name: str) -> Iterator[None]:
    """Serialise start and stop of one service across processes.

    Several engineers, `make test` and pytest sessions share one set of services; without the
    lock two concurrent `up`s would both see "down" and start two brokers on one data dir.
    """
    with file_lock(run_dir() / f".{name}.lock"):
        yield


def ensure_up(service: Service, on_start: Callable[[], object] = lambda: None) -> bool:
    """Install and start service unless it is up already; True if it had to be started.

    Raises ServiceError (with the service's log tail) if it cannot be started.
    """
    with service_lock(service.name):
        if service.is_up():
            return False
        service.install()
        on_start()
        service.up()
        return True


def ensure_down(service: Service) -> None:
    with service_lock(service.name):
        service.down()


# --------------------------------------------------------------------------- CLI


def cmd_install(services: list[Service]) -> int:
    for service in services:
        service.install()
        print(f"{service.name}: prerequisites installed")
    return 0


def cmd_up(services: list[Service]) -> int:
    failed = []
    for service in services:
        start = time.monotonic()
        try:
            if not ensure_up(service, on_start=functools.partial(_announce_start, service)):
                print(f"{service.name}: already up")
                continue
        except ServiceError as error:
            print(f"{service.name}: FAILED to start\n{error}", file=sys.stderr, flush=True)
            failed.append(service.name)
            continue
        print(f"{service.name}: up in {time.monotonic() - start:.1f} s", flush=True)
    if failed:
        print(f"services that failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_down(services: list[Service]) -> int:
    failed = 0
    for service in reversed(services):
        try:
            ensure_down(service)
            print(f"{service.name}: down")
        except ServiceError as error:
            print(f"{service.name}: FAILED to stop\n{error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_status(services: list[Service]) -> int:
    """Exit 0 if every selected service is up, 3 otherwise (as `systemctl status` does)."""
    all_up = True
    for service in services:
        up = service.is_up()
        all_up = all_up and up
        print(f"{service.name:14} {'up' if up else 'down':5} logs: {_paths(service)}")
    return 0 if all_up else 3


def cmd_env(services: list[Service]) -> int:
    for service in services:
        for key, value in service.env().items():
            print(f"export {key}={_shell_quote(value)}")
    return 0


def cmd_logs(services: list[Service]) -> int:
    for service in services:
        for path in service.log_paths():
            print(log_tail(path))
    return 0


def _announce_start(service: Service) -> None:
    print(f"{service.name}: starting (logs: {_paths(service)})", flush=True)


def _paths(service: Service) -> str:
    return " ".join(str(p) for p in service.log_paths())


def _shell_quote(value: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


COMMANDS: dict[str, Callable[[list[Service]], int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "env": cmd_env,
    "install": cmd_install,
    "logs": cmd_logs,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infra/services",
        description="Local Kafka, Slurm (and Elasticsearch) for sarchive dev and tests. "
        f"State and logs: {run_dir()}",
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("names", nargs="*", help="services (default: all registered)")
    args = parser.parse_args(argv)
    services = select(registry(), args.names)
    try:
        return COMMANDS[args.command](services)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
