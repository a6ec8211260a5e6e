"""`infra/services clean` (what .ci/run does before `make demo`): the services stopped, their
state and the demo's deleted, so the next `up` and `make demo` start as on a fresh clone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra import services
from infra.process import pid_alive
from infra.service import Service, ServiceError, demo_dir
from testkit.waiting import wait_until


class FakeService:
    """A service whose state is one directory; stopping it can be made to fail."""

    def __init__(self, name: str, state: Path, stops: bool = True) -> None:
        self.name = name
        self.state = state
        self.stops = stops
        self.running = True
        state.mkdir(parents=True)
        (state / "data").write_text("kept across `down`")

    def install(self) -> None:
        """Nothing to install."""

    def up(self) -> None:
        self.running = True

    def down(self) -> None:
        if not self.stops:
            raise ServiceError(f"{self.name}: survived SIGKILL")
        self.running = False

    def is_up(self) -> bool:
        return self.running

    def env(self) -> dict[str, str]:
        return {}

    def log_paths(self) -> list[Path]:
        return [self.state / "log"]

    def state_paths(self) -> list[Path]:
        return [self.state]


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SARCHIVE_RUN_DIR", str(tmp_path))
    return tmp_path


def use_services(monkeypatch: pytest.MonkeyPatch, fakes: list[FakeService]) -> None:
    every: list[Service] = list(fakes)
    monkeypatch.setattr(services, "registry", lambda: every)


def test_clean_stops_every_service_even_those_started_on_request_and_deletes_all_state(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeService("kafka", run_dir / "kafka")
    secure = FakeService("elasticsearch-secure", run_dir / "elasticsearch-secure")
    use_services(monkeypatch, [kafka, secure])
    demo_dir().mkdir()
    (demo_dir() / "producer.log").write_text("an earlier demo")

    assert services.main(["clean"]) == 0

    assert not kafka.running and not secure.running
    assert not kafka.state.exists() and not secure.state.exists()
    assert not demo_dir().exists()


def test_clean_on_a_fresh_clone_with_no_state_succeeds(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeService("kafka", run_dir / "kafka")
    use_services(monkeypatch, [kafka])
    assert services.main(["clean"]) == 0
    assert services.main(["clean"]) == 0


def test_clean_of_named_services_keeps_the_others_and_the_demo(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeService("kafka", run_dir / "kafka")
    slurm = FakeService("slurm", run_dir / "slurm")
    use_services(monkeypatch, [kafka, slurm])
    demo_dir().mkdir()

    assert services.main(["clean", "kafka"]) == 0

    assert not kafka.state.exists()
    assert slurm.running and slurm.state.exists()
    assert demo_dir().exists()


def test_clean_keeps_all_state_when_a_service_does_not_stop(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeService("kafka", run_dir / "kafka")
    stuck = FakeService("slurm", run_dir / "slurm", stops=False)
    use_services(monkeypatch, [kafka, stuck])
    demo_dir().mkdir()

    assert services.main(["clean"]) == 1

    assert stuck.state.exists() and kafka.state.exists() and demo_dir().exists()


def test_down_with_no_service_named_also_stops_those_started_on_request(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FakeService("kafka", run_dir / "kafka")
    secure = FakeService("elasticsearch-secure", run_dir / "elasticsearch-secure")
    use_services(monkeypatch, [kafka, secure])

    assert services.main(["down"]) == 0

    assert not kafka.running and not secure.running
    assert kafka.state.exists() and secure.state.exists()


@pytest.mark.parametrize("command", ["down", "clean"])
def test_down_and_clean_stop_the_web_server_the_demo_left_running(
        command: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Else `clean` deletes its pid file and the next demo's page finds its port taken."""
    use_services(monkeypatch, [FakeService("kafka", run_dir / "kafka")])
    demo_dir().mkdir(parents=True)
    # A process whose command line names sarchive-web, as the demo's does.
    web = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                            "sarchive-web"])
    try:
        # Until it has exec'd, the child's command line is still pytest's: not ours to stop.
        wait_until(lambda: pid_alive(web.pid, "sarchive-web"), 30, "the child runs its command")
        (demo_dir() / "sarchive-web.pid").write_text(str(web.pid))
        assert services.main([command]) == 0
        assert web.wait(timeout=30) is not None
        assert not (demo_dir() / "sarchive-web.pid").exists()
    finally:
        web.kill()
        web.wait()
