"""A one-host Grid Engine cell (sge_qmaster + sge_execd) with classic spooling, in the run dir.

Debian's Son of Grid Engine 8.1.9 (gridengine-master, -exec, -client). The packages' own
cell (/var/lib/gridengine/default, BerkeleyDB spooling, daemons forbidden to start by
policy-rc.d during the install) is left unused: ours has its own SGE_ROOT under
`${SARCHIVE_RUN_DIR}/gridengine/root`, whose bin/lib/utilbin/util are links to the packaged
ones, and spools "classic": a job's script is `<spool>/job_scripts/<id>` and its record
`<spool>/jobs/00/0000/<id>` (the id's ten digits split 2/4/4), plain files a watcher can see.
The files in infra/gridengine/ are the cell's bootstrap, global configuration, queue,
parallel environment and project.
"""

from __future__ import annotations

import os
import re
import socket
import string
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from infra.apt import apt_install, debconf_preseed, dpkg_installed
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
from infra.service import ServiceError

CELL = "default"
QUEUE = "all.q"
PARALLEL_ENVIRONMENT = "smp"
PROJECT = "sarchive"
SCHEDULE_INTERVAL = "0:0:1"
LIBEXEC = Path("/usr/lib/gridengine")  # the real binaries; /usr/bin's are a wrapper script
PACKAGED_ROOT = Path("/var/lib/gridengine")

# qstat -f states that make a queue instance unusable: unknown, alarm, suspended, error,
# disabled, configuration ambiguous/orphaned.
_UNUSABLE_STATES = frozenset("uaAsSEdcoC")


class GridEngineService:
    """A one-host Grid Engine cell with classic spooling, all in the run dir."""

    name = "gridengine"
    addr = "127.0.0.1"
    packages = ("gridengine-master", "gridengine-exec", "gridengine-client")
    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, run_dir: Path, repo: Path) -> None:
        self.home = run_dir / "gridengine"
        self.root = self.home / "root"  # SGE_ROOT
        self.common_dir = self.root / CELL / "common"
        self.qmaster_spool = self.home / "spool" / "qmaster"
        self.execd_spool = self.home / "spool" / "execd"
        self.global_conf = self.home / "global"  # spooldefaults names the configuration after it
        self.initialised = self.home / ".initialised"
        self.qmaster_log = self.qmaster_spool / "messages"
        self.launch_log = self.home / "launch.log"
        self.templates = repo / "infra" / "gridengine"
        self.qmaster_port = int(os.environ.get("SARCHIVE_GRIDENGINE_QMASTER_PORT", "16444"))
        self.execd_port = int(os.environ.get("SARCHIVE_GRIDENGINE_EXECD_PORT", "16445"))
        self.host = socket.gethostname().split(".")[0]

    @property
    def job_records(self) -> Path:
        return self.qmaster_spool / "jobs"

    @property
    def job_scripts(self) -> Path:
        return self.qmaster_spool / "job_scripts"

    # -- Service protocol

    def install(self) -> None:
        if all(dpkg_installed(package) for package in self.packages):
            return
        # Debian's postinst asks these three questions; answered, it installs unattended.
        debconf_preseed([
            "gridengine-common shared/gridengineconfig boolean true",
            f"gridengine-common shared/gridenginecell string {CELL}",
            f"gridengine-common shared/gridenginemaster string {self.host}",
        ])
        apt_install(self.packages)

    def up(self) -> None:
        if self.is_up():
            return
        for directory in (self.common_dir, self.qmaster_spool, self.execd_spool):
            directory.mkdir(parents=True, exist_ok=True)
        self.launch_log.write_text("")  # only this attempt's launch output is of interest
        self._write_cell()
        if not self.initialised.exists():
            self._initialise_spool()
        self._daemon_up("sge_qmaster", self._qmaster_pid_file)
        self._wait("sge_qmaster to answer `qconf -sh`", self._qmaster_answers,
                   [("sge_qmaster", self._qmaster_pid_file)])
        self._configure()
        self._daemon_up("sge_execd", self._execd_pid_file)
        self._wait(f"queue {QUEUE}@{self.host} to be usable (`qstat -f`)", self._queue_usable,
                   [("sge_qmaster", self._qmaster_pid_file), ("sge_execd", self._execd_pid_file)])

    def down(self) -> None:
        for marker, pid_file in (
            ("sge_execd", self._execd_pid_file),
            ("sge_qmaster", self._qmaster_pid_file),
        ):
            path = pid_file()
            stop_pid(read_pid(path), marker, self.stop_timeout, self.log_paths())
            path.unlink(missing_ok=True)

    def is_up(self) -> bool:
        return (
            pid_alive(read_pid(self._qmaster_pid_file()), "sge_qmaster")
            and pid_alive(read_pid(self._execd_pid_file()), "sge_execd")
            and tcp_open(self.addr, self.qmaster_port)
        )

    def env(self) -> dict[str, str]:
        return {
            "SGE_ROOT": str(self.root),
            "SGE_CELL": CELL,
            "SGE_QMASTER_PORT": str(self.qmaster_port),
            "SGE_EXECD_PORT": str(self.execd_port),
            "SARCHIVE_GRIDENGINE_SPOOL": str(self.qmaster_spool),
        }

    def log_paths(self) -> list[Path]:
        execd_logs = sorted(self.execd_spool.glob("*/messages"))
        return [self.qmaster_log, *execd_logs, self.launch_log]

    def state_paths(self) -> list[Path]:
        return [self.home]

    # -- the cell

    def _write_cell(self) -> None:
        values = {
            "common_dir": self.common_dir,
            "qmaster_spool": self.qmaster_spool,
            "execd_spool": self.execd_spool,
        }
        write_if_changed(self.common_dir / "bootstrap", self.render("bootstrap.template", values))
        write_if_changed(self.common_dir / "act_qmaster", f"{self.host}\n")
        # 127.0.0.1 resolves to "localhost", the host's name to the same address: without the
        # alias qmaster refuses its own clients ("access denied (client IP resolved to host
        # name "localhost" ...)").
        write_if_changed(self.common_dir / "host_aliases", f"{self.host} localhost\n")
        for link, target in (
            ("bin", PACKAGED_ROOT / "bin"),
            ("lib", PACKAGED_ROOT / "lib"),
            ("utilbin", PACKAGED_ROOT / "utilbin"),
            ("util", Path("/usr/share/gridengine/util")),
        ):
            path = self.root / link
            if not path.is_symlink():
                path.symlink_to(target)

    def _initialise_spool(self) -> None:
        """What Debian's init_cluster does, for classic spooling: the spool, the global
        configuration, the complexes, the usersets and root as manager."""
        global_conf = self.render("global.template", {"execd_spool": self.execd_spool})
        write_if_changed(self.global_conf, global_conf)
        resources = Path("/usr/share/gridengine/util/resources")
        for argv in (
            ["spoolinit", "classic", "libspoolc", f"{self.common_dir};{self.qmaster_spool}",
             "init"],
            ["spooldefaults", "configuration", str(self.global_conf)],
            ["spooldefaults", "complexes", str(resources / "centry")],
            ["spooldefaults", "usersets", str(resources / "usersets")],
            ["spooldefaults", "managers", "root"],
        ):
            self._run_logged([str(LIBEXEC / argv[0]), *argv[1:]])
        self.initialised.write_text("spool initialised\n")

    def _configure(self) -> None:
        """The submit host, project, parallel environment and queue: added, or modified to
        match the templates."""
        if self.host not in self._client("qconf", "-ss").stdout.split():
            self._qconf("-as", self.host)
        work = self.home / "objects"
        work.mkdir(exist_ok=True)
        for kind, name, content in (
            ("prj", PROJECT, self.render("sarchive.prj", {})),
            ("p", PARALLEL_ENVIRONMENT, self.render("smp.pe", {})),
            ("q", QUEUE, self.render("all.q.template",
                                      {"host": self.host, "slots": os.cpu_count() or 1})),
        ):
            # qconf reads objects from files; -Mconf-style commands take the name from the
            # file, so each object gets a file named after it.
            path = work / name
            write_if_changed(path, content)
            exists = self._client("qconf", f"-s{kind}", name).returncode == 0
            self._qconf(f"-M{kind}" if exists else f"-A{kind}", str(path))
        # The scheduler's default 15 s between runs would make every test of a running job
        # wait that long for its start.
        scheduler = self._client("qconf", "-ssconf").stdout
        fast = re.sub(r"(?m)^schedule_interval\s+\S+$", f"schedule_interval {SCHEDULE_INTERVAL}",
                      scheduler)
        if fast != scheduler:
            path = work / "sched_configuration"
            path.write_text(fast)
            self._qconf("-Msconf", str(path))

    def render(self, template: str, values: Mapping[str, object]) -> str:
        """A file of infra/gridengine/ as the cell gets it: comments dropped, ${...} filled."""
        text = (self.templates / template).read_text()
        # The files carry comments for the reader; qconf's parsers take none.
        body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
        return string.Template(body).substitute(values)

    # -- daemons and clients

    def _qmaster_pid_file(self) -> Path:
        return self.qmaster_spool / "qmaster.pid"

    def _execd_pid_file(self) -> Path:
        # execd names its spool directory after the host name it resolves for itself.
        found = sorted(self.execd_spool.glob("*/execd.pid"))
        return found[0] if found else self.execd_spool / self.host / "execd.pid"

    def _sge_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def _daemon_up(self, name: str, pid_file: Callable[[], Path]) -> None:
        if pid_alive(read_pid(pid_file()), name):
            return
        self._run_logged([f"/usr/sbin/{name}"])
        # The daemon forks; its child writes the pid file once it runs.
        if not wait_until(lambda: pid_alive(read_pid(pid_file()), name), 20):
            raise service_error(f"gridengine: {name} did not start", self.log_paths())

    def _run_logged(self, argv: list[str]) -> None:
        """Run a command (a daemon that forks, a spool tool); its output goes to launch.log."""
        run_logged("gridengine", argv, self.launch_log, logs=self.log_paths(),
                   env=self._sge_env(), cwd=self.home)

    def _client(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LIBEXEC / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            env=self._sge_env(),
            timeout=30,
            check=False,
        )

    def _qconf(self, *argv: str) -> None:
        result = self._client("qconf", *argv)
        if result.returncode != 0:
            raise service_error(
                f"gridengine: `qconf {' '.join(argv)}` failed ({result.returncode}):"
                f" {result.stdout}{result.stderr}",
                self.log_paths(),
            )

    def _qmaster_answers(self) -> bool:
        return self.host in self._client("qconf", "-sh").stdout.split()

    def _queue_usable(self) -> bool:
        return queue_usable(self._client("qstat", "-f", "-q", QUEUE).stdout, QUEUE)

    def _wait(
        self, what: str, predicate: Callable[[], bool],
        watch: Sequence[tuple[str, Callable[[], Path]]],
    ) -> None:
        """Wait for predicate; fail at once, not after the timeout, if a watched daemon dies."""

        def ready() -> bool:
            for name, pid_file in watch:
                if not pid_running(read_pid(pid_file())):
                    raise service_error(f"gridengine: {name} exited while waiting for {what}",
                                        self.log_paths())
            return predicate()

        try:
            ok = wait_until(ready, self.start_timeout, 0.5)
        except subprocess.TimeoutExpired as error:
            raise ServiceError(f"gridengine: a client hung while waiting for {what}") from error
        if not ok:
            raise service_error(
                f"gridengine: timed out after {self.start_timeout:.0f} s waiting for {what}",
                self.log_paths(),
            )


def queue_usable(qstat_f: str, queue: str) -> bool:
    """Whether `qstat -f` lists an instance of queue with a load (its execd reported) and no
    state that keeps jobs off it."""
    for line in qstat_f.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith(f"{queue}@"):
            continue
        # queuename qtype resv/used/tot load_avg arch [states]
        if len(fields) < 5 or not re.fullmatch(r"[\d.]+", fields[3]):
            return False
        states = fields[5] if len(fields) > 5 else ""
        return not (set(states) & _UNUSABLE_STATES)
    return False
