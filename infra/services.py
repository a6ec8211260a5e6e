"""Command line of the local services: python3 -m infra.services (or the infra/services wrapper).

Usage: infra/services up|down|clean|status|env|install|logs [service ...]

With no service named, a command applies to kafka, slurm and elasticsearch, except `down` and
`clean`, which apply to every service: elasticsearch-secure (the security tests' node),
prometheus, kafka-secure (the secured broker), kafka-cluster (three brokers) and gridengine
(a Grid Engine cell) start only when named, but whatever runs is stopped. `clean` stops
services and deletes their state and logs (jars and Maven's cache are no state and stay);
with no service named, the demo's directory too: the next `up` and `make demo` start as on a
fresh clone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.process import log_tail, read_pid, stop_pid
from infra.registry import ON_REQUEST, ensure_down, ensure_up, registry, select
from infra.service import Service, ServiceError, demo_dir, demo_web_pid_file, run_dir

# Stopping and cleaning apply to every service when none is named, not only to those `up` starts.
EVERY_SERVICE_BY_DEFAULT = frozenset({"down", "clean"})


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


def cmd_clean(services: list[Service]) -> int:
    if cmd_down(services) != 0:
        return 1  # deleting the data of a service still running would corrupt it, not reset it
    for service in services:
        for path in service.state_paths():
            _delete_tree(path)
        print(f"{service.name}: state deleted ({_paths_of(service.state_paths())})")
    return 0


def cmd_status(services: list[Service]) -> int:
    """Exit 0 if every selected service is up, 3 otherwise (as `systemctl status` does)."""
    all_up = True
    for service in services:
        up = service.is_up()
        all_up = all_up and up
        print(f"{service.name:20} {'up' if up else 'down':5} logs: {_paths(service)}")
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


def _delete_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # a fresh clone has no state: nothing to do
        shutil.rmtree(path)


def _paths(service: Service) -> str:
    return _paths_of(service.log_paths())


def _paths_of(paths: Sequence[Path]) -> str:
    return " ".join(str(p) for p in paths)


def _shell_quote(value: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


COMMANDS: dict[str, Callable[[list[Service]], int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "clean": cmd_clean,
    "status": cmd_status,
    "env": cmd_env,
    "install": cmd_install,
    "logs": cmd_logs,
}


def stop_demo_web() -> None:
    """The sarchive-web `make demo` leaves running goes with the services it reads: a `clean`
    would otherwise delete its pid file and leave it holding its port."""
    pid_file = demo_web_pid_file()
    stop_pid(read_pid(pid_file), "sarchive-web")
    pid_file.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infra/services",
        description="Local Kafka, Slurm and Elasticsearch for sarchive dev and tests. "
        f"State and logs: {run_dir()}",
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument(
        "names",
        nargs="*",
        help=f"services (default: all but {', '.join(sorted(ON_REQUEST))}, started on request;"
        " down and clean: all)",
    )
    args = parser.parse_args(argv)
    every_service = args.command in EVERY_SERVICE_BY_DEFAULT and not args.names
    services = registry() if every_service else select(registry(), args.names)
    try:
        if every_service and args.command in ("down", "clean"):
            stop_demo_web()
        status = COMMANDS[args.command](services)
        if status == 0 and args.command == "clean" and every_service:
            _delete_tree(demo_dir())
            print(f"demo: state deleted ({demo_dir()})")
        return status
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
