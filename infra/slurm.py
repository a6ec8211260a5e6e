"""A one-node Slurm cluster (slurmctld + slurmd) with its own munged, all in the run dir.

Debian's slurm and munge packages; the configuration is infra/slurm/slurm.conf.template.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import string
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.apt import apt_install
from infra.process import (
    pid_alive,
    pid_running,
    read_pid,
    run_logged,
    service_error,
    stop_pid,
    tcp_open,
    wait_until,
    write_if_changed,
)


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

    def state_paths(self) -> list[Path]:
        # The munge socket's directory is outside the run dir when the path was too long.
        return sorted({self.home, self.munge_dir, self.munge_socket.parent})

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
        self._run_daemon_command(argv)
        # The daemon forks; its child writes the pid file once it runs.
        if not wait_until(lambda: pid_alive(read_pid(pid_file), name), 20):
            raise service_error(f"slurm: {name} did not start", [*self.log_paths()])

    def _run_daemon_command(self, argv: list[str]) -> None:
        """Run a self-daemonising command; its pre-fork stderr goes to launch.log."""
        run_logged("slurm", argv, self.launch_log, logs=self.log_paths(),
                   env=self._slurm_env())

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
