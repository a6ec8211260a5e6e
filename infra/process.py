"""Process utilities of the services: pid files, detached start, stop, waiting, log tails, locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from infra.service import ServiceError

LOG_TAIL_LINES = 60


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


def run_logged(name: str, argv: Sequence[str], log: Path, *, logs: Sequence[Path],
               env: Mapping[str, str], cwd: Path | None = None) -> None:
    """Run a command that daemonises itself or sets a service up, in a session of its own, its
    output appended to log after a line naming it; a failure is a ServiceError of service
    `name` with the tails of logs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"=== {time.strftime('%F %T')} {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=cwd, timeout=60, check=False)
    if result.returncode != 0:
        raise service_error(f"{name}: `{' '.join(argv)}` exited with {result.returncode}",
                            logs)


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
