"""What every service module shares: the Service protocol, ServiceError, and where things live.

All state lives in ${SARCHIVE_RUN_DIR:-<repo>/.run}; `down` keeps it, so `up` again resumes
with the same Kafka data, Slurm job ids and Elasticsearch indices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

INFRA_DIR = Path(__file__).resolve().parent


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

    def state_paths(self) -> list[Path]: ...  # everything `clean` deletes: data, config, logs


def repo_root() -> Path:
    return INFRA_DIR.parent


def run_dir() -> Path:
    configured = os.environ.get("SARCHIVE_RUN_DIR")
    return Path(configured).resolve() if configured else repo_root() / ".run"


def demo_dir() -> Path:
    """`make demo`'s logs, archive and producer state."""
    return run_dir() / "demo"


def demo_web_pid_file() -> Path:
    """The pid of the sarchive-web that `make demo` leaves running."""
    return demo_dir() / "sarchive-web.pid"
