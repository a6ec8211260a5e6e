"""bench/harness.py's view of a service's processes while threads and children come and go."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import (
    CpuMeter,
    Service,
    cpu_seconds,
    listening_pid,
    port_of,
    proc_status_kib,
    process_tree,
)
from testkit.waiting import wait_until

# Starts threads and forks children that end at once, as fast as it can, forever.
CHURN = """
import os, threading
print("churning", flush=True)
while True:
    threads = [threading.Thread(target=lambda: None) for _ in range(8)]
    for thread in threads:
        thread.start()
    if os.fork() == 0:
        os._exit(0)
    for thread in threads:
        thread.join()
    os.wait()
"""
CALLS = 2000


@pytest.fixture
def churning(tmp_path: Path) -> Iterator[Service]:
    with Service("churn", [sys.executable, "-c", CHURN], tmp_path / "churn.log") as service:
        service.wait_for_log("churning")
        yield service
        service.kill()


def test_listing_a_process_whose_threads_and_children_come_and_go_never_fails(
        churning: Service) -> None:
    """pids(), rss_mb() and peak_rss_mb() skip a thread or child that ended meanwhile."""
    seen_children = 0
    for _ in range(CALLS):
        pids = churning.pids()
        assert pids[0] == churning.pid
        seen_children += len(pids) - 1
        assert churning.rss_mb() > 0
        assert churning.peak_rss_mb() > 0
    assert seen_children > 0, "no child was ever listed: the race was not provoked"


def test_a_process_that_has_exited_has_no_memory_and_no_children(tmp_path: Path) -> None:
    """A zombie (exited, not reaped yet) counts 0 KiB; a reaped one too."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: "Z" in Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1]
               .split()[:1], 10, "the child is a zombie")
    assert proc_status_kib(child.pid, "VmRSS") == 0
    assert process_tree(child.pid) == [child.pid]
    child.wait()
    assert proc_status_kib(child.pid, "VmRSS") == 0
    assert process_tree(child.pid) == [child.pid]


def test_cpu_meter_counts_the_cpu_a_process_spent_between_start_and_stop() -> None:
    """A child that burns CPU shows the CPU it burnt in between (at most the wall time: one
    thread); a name with no process at either end is NaN, not 0."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter({"burner": lambda: [burner.pid], "nobody": list})
        before = cpu_seconds(burner.pid)
        meter.start()
        began = time.monotonic()
        wait_until(lambda: cpu_seconds(burner.pid) - before > 0.3, 30,
                   "the burner spent 0.3 s of CPU")
        used = meter.stop()
        elapsed = time.monotonic() - began
    finally:
        burner.kill()
        burner.wait()
    assert 0.3 <= used["burner"] <= elapsed + 0.05
    assert math.isnan(used["nobody"])
    assert meter.per_job_us(1000)["burner"] == pytest.approx(used["burner"] * 1000)


def test_the_process_listening_on_a_port_is_found() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listening_pid(port) == os.getpid()
        assert port_of(f"127.0.0.1:{port},other:1") == port_of(f"http://h:{port}/") == port
    assert listening_pid(port) is None
