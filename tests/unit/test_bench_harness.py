"""bench/harness.py's view of a service's processes while threads and children come and go."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import Service, proc_status_kib, process_tree
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
