"""`make demo`'s waits: on a fresh machine Elasticsearch answers "not there yet" (connection
refused, 404 before the sarchive-jobs alias exists, 503 before its shards are assigned, too few
hits before a refresh) for a while; the demo asks again until its deadline, then fails with one
line, never a traceback. A second `make demo` stops the first one's sarchive-web, and only
it, before it starts its own on the same port."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import demo
from infra.process import pid_alive
from infra.service import demo_dir, demo_web_pid_file
from testkit.waiting import wait_until

QUERY: dict[str, object] = {"query": {"match_all": {}}}
HIT = {"_id": "sarchive-dev/1", "_source": {"job_id": "1"}}


class ScriptedElasticsearch(http.server.ThreadingHTTPServer):
    """Answers each search with the next (status, body) of its script, the last one forever."""

    def __init__(self, answers: list[tuple[int, object]]) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.answers = answers
        self.searches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_answer(self) -> tuple[int, object]:
        answer = self.answers[min(self.searches, len(self.answers) - 1)]
        self.searches += 1
        return answer


# An answer cut short: the node closes the connection after half of the body it announced.
CUT_SHORT = -1


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedElasticsearch

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.server.next_answer()
        payload = json.dumps(body).encode()
        self.send_response(200 if status == CUT_SHORT else status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[:len(payload) // 2] if status == CUT_SHORT else payload)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test's output is its assertions."""


def hits(*documents: object) -> dict[str, object]:
    return {"hits": {"hits": list(documents)}}


def index_not_found() -> dict[str, object]:
    return {"error": {"type": "index_not_found_exception", "reason": "no such index"},
            "status": 404}


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "POLL_SECONDS", 0.01)


@pytest.fixture
def scripted_es(request: pytest.FixtureRequest) -> Iterator[ScriptedElasticsearch]:
    server = ScriptedElasticsearch(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def refused_url() -> str:
    """A loopback URL nothing listens on: the port was free a moment ago and is closed now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("scripted_es", [[
    (404, index_not_found()),
    (503, "no JSON error object: a proxy's answer"),
    (429, {"error": {"type": "es_rejected_execution_exception", "reason": "queue full"},
           "status": 429}),
    (200, hits()),
    (200, hits(HIT)),
    (200, hits(HIT, HIT)),
]], indirect=True)
def test_search_wait_passes_404_503_429_and_too_few_hits_until_enough_hits(
        scripted_es: ScriptedElasticsearch) -> None:
    found = demo.wait_for("two hits", lambda: demo.enough_hits(scripted_es.url, QUERY, 2),
                          timeout=30)
    assert found == [HIT, HIT]
    assert scripted_es.searches == 6


@pytest.mark.parametrize("scripted_es", [[(CUT_SHORT, hits(HIT)), (200, hits(HIT))]],
                         indirect=True)
def test_an_answer_cut_short_by_a_node_going_down_is_not_yet(
        scripted_es: ScriptedElasticsearch) -> None:
    """http.client's IncompleteRead is no OSError: it is asked again, not a traceback."""
    found = demo.wait_for("a hit", lambda: demo.enough_hits(scripted_es.url, QUERY, 1),
                          timeout=30)
    assert found == [HIT]
    assert scripted_es.searches == 2


def test_refused_connection_is_not_yet_and_times_out_with_one_line_naming_logs() -> None:
    url = refused_url()
    with pytest.raises(demo.DemoError) as failure:
        demo.wait_for("the gromacs jobs in Elasticsearch",
                      lambda: demo.enough_hits(url, QUERY, 2), timeout=0.2)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("timed out after 0 s waiting for the gromacs jobs in Elasticsearch")
    assert url in message
    assert str(demo.DEMO_DIR) in message


@pytest.mark.parametrize("scripted_es", [[(404, index_not_found())]], indirect=True)
def test_index_that_never_appears_fails_at_the_deadline_saying_what_was_last_seen(
        scripted_es: ScriptedElasticsearch) -> None:
    with pytest.raises(demo.DemoError, match=r"last seen: HTTP 404 from .*/sarchive-jobs/_search:"
                       r" index_not_found_exception: no such index\)"):
        demo.wait_for("hits", lambda: demo.enough_hits(scripted_es.url, QUERY, 1), timeout=0.3)
    assert scripted_es.searches > 1


@pytest.mark.parametrize("scripted_es", [[
    (400, {"error": {"type": "parsing_exception", "reason": "unknown query [mtch]"},
           "status": 400}),
    (200, hits(HIT)),
]], indirect=True)
def test_rejected_query_fails_at_once_instead_of_waiting(
        scripted_es: ScriptedElasticsearch) -> None:
    with pytest.raises(demo.DemoError, match=r"HTTP 400 .*parsing_exception: unknown query"):
        demo.wait_for("hits", lambda: demo.enough_hits(scripted_es.url, QUERY, 1), timeout=30)
    assert scripted_es.searches == 1


def test_wait_fails_at_once_when_a_service_of_the_demo_exited() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()

    def never() -> None:
        raise demo.NotReadyError("nothing yet")

    with pytest.raises(demo.DemoError, match="exited with code 3 while waiting for the archive"):
        demo.wait_for("the archive", never, [exited], timeout=30)


def test_main_reports_an_expected_failure_as_one_line_on_stderr_and_exit_code_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def failing_demo() -> int:
        raise demo.DemoError("timed out after 120 s waiting for job 7 in the archive")

    monkeypatch.setattr(demo, "run_demo", failing_demo)
    assert demo.main() == 1
    captured = capsys.readouterr()
    assert captured.err == ("[demo] FAILED: timed out after 120 s waiting for job 7 in the"
                            " archive\n")
    assert "Traceback" not in captured.out + captured.err


# A stand-in for the previous demo's sarchive-web: holds a port, takes a moment to stop.
SLOW_WEB = """
import signal, socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def stop(*_):
    time.sleep(1)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("listening", flush=True)
time.sleep(600)
"""


def test_the_next_demo_stops_the_previous_web_server_and_its_port_is_free_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARCHIVE_RUN_DIR", str(tmp_path))
    demo_dir().mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = subprocess.Popen([sys.executable, "-c", SLOW_WEB, str(port), "sarchive-web"],
                           stdout=subprocess.PIPE)
    try:
        assert web.stdout is not None and web.stdout.readline() == b"listening\n"
        wait_until(lambda: pid_alive(web.pid, "sarchive-web"), 30, "the stand-in runs")
        demo_web_pid_file().write_text(str(web.pid))
        demo.stop_previous_web()
        with socket.create_server(("127.0.0.1", port)):
            pass  # the new sarchive-web can listen where the previous one did
        assert not demo_web_pid_file().exists()
    finally:
        web.kill()
        web.wait()


# Another process that a stale pid file names: says whether a SIGTERM reached it before
# its standard input closed (a pending signal is handled before the read returns).
OTHER = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(0)))
print("ready", flush=True)
sys.stdin.read()
print("still here", flush=True)
"""


def test_a_stale_pid_file_naming_another_process_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARCHIVE_RUN_DIR", str(tmp_path))
    demo_dir().mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", OTHER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"ready\n"
        demo_web_pid_file().write_text(str(other.pid))
        demo.stop_previous_web()
        output, _ = other.communicate(timeout=30)
        assert output == b"still here\n"
    finally:
        other.kill()
        other.wait()


def test_a_job_id_an_earlier_demo_archived_is_waited_for_again_beside_it(
        tmp_path: Path) -> None:
    """A Slurm whose state was reset gives job 7 again, while the demo's archive keeps the
    earlier job 7: the wait is for this demo's file (stored beside it, with a tag), not the
    earlier one, which would make the byte comparison vacuous."""
    earlier_file = tmp_path / "20261201" / "job.7_script"
    earlier_file.parent.mkdir()
    earlier_file.write_bytes(b"#!/bin/sh\necho earlier\n")
    (tmp_path / "20261201" / "job.70_script").write_bytes(b"another job\n")
    earlier = demo.archived_scripts(tmp_path)
    assert earlier == {earlier_file, tmp_path / "20261201" / "job.70_script"}
    with pytest.raises(demo.NotReadyError, match="no new"):
        demo.archived_script(tmp_path, "7", earlier)
    beside = tmp_path / "20261202" / "job.7_script.0123456789ab"
    beside.parent.mkdir()
    beside.write_bytes(b"#!/bin/sh\necho this demo\n")
    (tmp_path / "20261202" / "job.7_environment.0123456789ab").write_bytes(b"A=1\0")
    assert demo.archived_script(tmp_path, "7", earlier) == beside
    assert demo.archived_script(tmp_path, "70", set()) == tmp_path / "20261201" / "job.70_script"
