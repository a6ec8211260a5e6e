"""sarchive-web as a process, as logrotate and systemd treat it: SIGHUP reopens its log file
and it goes on serving (Python's default for SIGHUP would end it). No Elasticsearch needed:
the service asks it nothing until a page is requested."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from testkit.processes import ServiceProcess, free_port
from testkit.web import web_get

REPO = Path(__file__).resolve().parents[2]


def test_sighup_reopens_the_web_log_file_and_the_service_goes_on_serving(
        tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "web.log"
    web = ServiceProcess(
        "sarchive-web", [sys.executable, "-m", "web.main", "--es-url", "http://127.0.0.1:9",
                         "--index", "sarchive-jobs", "--port", str(port), "--log-file",
                         str(log_file), "--trusted-proxy", "127.0.0.1"],
        tmp_path / "stdout.log", cwd=REPO)
    with web:
        web.wait_until(lambda: log_file.exists() and "serving on" in log_file.read_text(), 30,
                       "sarchive-web logs that it serves")
        log_file.rename(tmp_path / "web.log.1")
        web.signal(signal.SIGHUP)
        web.wait_until(lambda: log_file.exists()
                       and "log file reopened (SIGHUP)" in log_file.read_text(), 30,
                       "the log file is reopened")
        assert web_get(f"http://127.0.0.1:{port}", "/static/highlight.css", "alice").status == 200
        assert web.alive()
        assert web.stop() == 0
    assert "sarchive-web stopped" in log_file.read_text()
