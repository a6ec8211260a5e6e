"""The file-archive backend on archives written by the archive consumer's own sink, and
`sarchive show` to a pseudo-terminal versus a pipe."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.archive.config import ArchiveConfig
from consumers.archive.sidecar import FORMAT
from consumers.archive.sink import ArchiveSink
from query.archive import SIDECAR_FORMAT, FileArchive
from query.backend import BackendError
from query.cli import PROGRESS_INTERVAL, ProgressLine
from query.criteria import Criteria
from query.jobspec import parse_job_spec
from schemas.archive_layout import Layout, Period
from schemas.model import JobEvent
from testkit.events import SUBMIT_MS, job_event
from tests.unit.conftest import gridengine_event, torque_event

DAY_MS = 86_400_000
HOSTILE = b"#!/bin/bash\necho '\x1b]0;owned\x07'\x1b[2J\nmodule load gcc/9.3.0\n"


def archive_of(root: Path, events: list[JobEvent], layout: str = "sarchive") -> FileArchive:
    config = ArchiveConfig(archive=root, layout=layout, time_zone="UTC")
    sink = ArchiveSink(config, CollectorRegistry())
    sink.prepare()
    assert list(sink.write_batch(events)) == []
    sink.close()
    return FileArchive(root, Layout.from_setting(layout, Period.DAILY, UTC), UTC)


def test_sidecar_format_is_the_consumers() -> None:
    assert SIDECAR_FORMAT == FORMAT


@pytest.mark.parametrize("layout", ["sarchive", "per-user", "sharded", "xdmod"])
def test_a_job_is_found_by_id_in_every_layout(tmp_path: Path, layout: str) -> None:
    event = job_event(environment=b"A=1\0MULTI=x\ny\0")
    records = archive_of(tmp_path, [event, job_event(job_id="4712")], layout).find(
        parse_job_spec("4711"))
    assert [r.job_key for r in records] == [event.job_key]
    assert records[0].script == event.script
    if layout != "xdmod":  # xdmod's layout keeps the script alone
        assert dict(records[0].environment) == {"A": "1", "MULTI": "x\ny"}
        assert records[0].spool_files == tuple((f.name, f.content) for f in event.spool_files)


def test_a_gridengine_job_reads_back_its_script_environment_and_spool_files(
        tmp_path: Path) -> None:
    event = gridengine_event()
    [record] = archive_of(tmp_path, [event]).find(parse_job_spec(event.job_key))
    assert record.script == event.script
    assert dict(record.environment) == {"HOME": "/home/alice", "SECRET_TOKEN": "<redacted>"}
    assert record.spool_files == tuple((f.name, f.content) for f in event.spool_files)
    assert record.metadata["scheduler"] == "gridengine"


def test_a_reused_id_on_the_same_day_gives_both_jobs_newest_first(tmp_path: Path) -> None:
    first = job_event()
    second = job_event(submit_time=SUBMIT_MS + 60_000, script=b"#!/bin/sh\necho again\n")
    archive = archive_of(tmp_path, [first, second])
    assert len(list(tmp_path.rglob("job.4711_metadata.json.*"))) == 1  # stored beside
    assert [r.job_key for r in archive.find(parse_job_spec("4711"))] == [
        second.job_key, first.job_key]
    assert [r.job_key for r in archive.find(parse_job_spec(first.job_key))] == [first.job_key]


def test_search_prunes_by_date_and_matches_the_contents(tmp_path: Path) -> None:
    events = [job_event(job_id=str(100 + n), submit_time=SUBMIT_MS + n * DAY_MS,
                        user=f"u{n % 2}", script=HOSTILE if n == 3 else b"echo\n")
              for n in range(6)]
    archive = archive_of(tmp_path, events)
    found = archive.search(Criteria(since_ms=SUBMIT_MS + 2 * DAY_MS,
                                    until_ms=SUBMIT_MS + 4 * DAY_MS), None)
    assert [m["job_id"] for m in found] == ["103", "102"]
    assert [m["job_id"] for m in archive.search(Criteria(module="gcc/9"), None)] == ["103"]
    assert [m["job_id"] for m in archive.search(Criteria(user="u1"), 2)] == ["105", "103"]
    assert archive.module_counts(Criteria()) == {"gcc/9.3.0": 1}


def test_a_sidecar_naming_a_path_outside_the_archive_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    archive = archive_of(root, [job_event()])
    (tmp_path / "secret").write_bytes(b"outside")
    sidecar = next(root.rglob("job.4711_metadata.json"))
    document = json.loads(sidecar.read_bytes())
    document["files"][0]["path"] = "../secret"
    sidecar.write_text(json.dumps(document))
    with pytest.raises(BackendError, match="outside the archive"):
        archive.find(parse_job_spec("4711"))
    script = next(root.rglob("job.4711_script"))
    script.unlink()
    script.symlink_to(tmp_path / "secret")
    document["files"][0]["path"] = str(script.relative_to(root))
    sidecar.write_text(json.dumps(document))
    with pytest.raises(BackendError, match=r"outside the archive|symbolic link"):
        archive.find(parse_job_spec("4711"))


def _sarchive(root: Path, *argv: str, terminal: bool) -> tuple[int, bytes]:
    command = [sys.executable, "-m", "query.cli", *argv, "--archive", str(root),
               "--time-zone", "UTC"]
    if not terminal:
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
        return done.returncode, done.stdout
    controller, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(30), output


def test_show_script_is_exact_to_a_pipe_and_safe_on_a_terminal(tmp_path: Path) -> None:
    archive_of(tmp_path, [job_event(script=HOSTILE)])
    assert _sarchive(tmp_path, "show", "4711", "--script", terminal=False) == (0, HOSTILE)
    status, shown = _sarchive(tmp_path, "show", "4711", "--script", terminal=True)
    assert status == 0
    assert b"\x1b" not in shown and b"\x07" not in shown
    assert b"\\e]0;owned\\x07" in shown
    status, raw = _sarchive(tmp_path, "show", "4711", "--script", "--raw", terminal=True)
    assert b"\x1b[2J" in raw
    status, shown = _sarchive(tmp_path, "show", "4711", terminal=True)
    assert status == 0 and b"\x1b" not in shown and b"\x07" not in shown


def test_exit_statuses_say_missing_ambiguous_and_usage(tmp_path: Path) -> None:
    archive_of(tmp_path, [job_event(), job_event(submit_time=SUBMIT_MS + DAY_MS)])
    assert _sarchive(tmp_path, "show", "9", terminal=False)[0] == 1
    assert _sarchive(tmp_path, "show", "4711", terminal=False)[0] == 3
    assert _sarchive(tmp_path, "show", "4711", "--latest", terminal=False)[0] == 0
    assert _sarchive(tmp_path, "show", "4711", "--submitted", "2024-03-15",
                     terminal=False)[0] == 0
    assert _sarchive(tmp_path, "show", "47/11", terminal=False)[0] == 2
    assert _sarchive(tmp_path, "search", "--since", "soon", terminal=False)[0] == 2


def test_search_by_user_finds_users_whose_names_json_escapes(tmp_path: Path) -> None:
    """The raw-bytes first test (criteria.may_match_raw) passes the sidecars the consumer
    writes for any name: non-ASCII, quotes, backslashes."""
    users = ["jos\u00e9", 'a"b', "c\\d", "\u00e9\u00e8", "plain"]
    archive = archive_of(tmp_path, [job_event(job_id=str(100 + n), user=user)
                                    for n, user in enumerate(users)])
    for n, user in enumerate(users):
        assert [m["job_id"] for m in archive.search(Criteria(user=user), None)] == [
            str(100 + n)]
    assert archive.search(Criteria(user="jos"), None) == []
    assert len(archive.search(Criteria(), None)) == len(users)


HOSTILE_TEXT = "\x1b]0;owned\x07\x1b[2J\u009b\u202eevil"
HOSTILE_BYTES = HOSTILE_TEXT.encode() + b"\x9b\xff"  # and bytes that are not UTF-8


def _terminal_unsafe(output: bytes) -> list[str]:
    """The characters of output that a terminal would act on rather than show: C0 controls
    but newline and tab (the pseudo-terminal turns \\n into \\r\\n; the progress line's own
    \\r ESC [K is sarchive's), DEL, C1 controls, bidirectional overrides, non-UTF-8 bytes."""
    text = output.replace(b"\r\n", b"\n").replace(b"\r\x1b[K", b"").decode(
        "utf-8", "surrogateescape")
    return sorted({repr(c) for c in text if (ord(c) < 0x20 and c not in "\n\t")
                   or 0x7F <= ord(c) < 0xA0 or 0x202A <= ord(c) <= 0x202E
                   or 0x2066 <= ord(c) <= 0x2069 or 0xDC80 <= ord(c) <= 0xDCFF})


def test_nothing_of_a_hostile_job_reaches_a_terminal_on_any_output_path(
        tmp_path: Path) -> None:
    """Every subcommand and view, stdout and stderr on a pseudo-terminal, over Slurm and
    Grid Engine jobs whose script, environment (binary values, a hostile key), names,
    directives and modules hold escape sequences, C1 controls and bidirectional overrides."""
    script = b"#!/bin/sh\n" + HOSTILE_BYTES + b"\nmodule load evil\x1b[2J/1\n"
    environment = (b"EVIL=" + HOSTILE_BYTES + b"\0K\x1b[2J=v\0BINARY=\x01\x02\xfe\n\0"
                   b"LOADEDMODULES=m\x1b]0;t\x07/2\0")
    hostile = {"script": script, "environment": environment, "job_name": HOSTILE_TEXT,
               "account": HOSTILE_TEXT, "partition": HOSTILE_TEXT,
               "work_dir": HOSTILE_TEXT, "directives": {HOSTILE_TEXT: HOSTILE_TEXT}}
    events = [job_event(job_id="66", **hostile),
              job_event(job_id="66", submit_time=SUBMIT_MS + DAY_MS, **hostile),
              gridengine_event(job_id="67", **hostile)]
    root = tmp_path / "archive"
    root.mkdir()
    archive_of(root, events)
    runs = [("show", "66"), ("show", "66", "--latest"), ("show", "66", "--latest", "--script"),
            ("show", "66", "--latest", "--env"), ("show", "66", "--latest", "--env", "-0"),
            ("show", "66", "--latest", "--json"),
            ("show", "67"), ("show", "67", "--script"), ("show", "67", "--env", "-0"),
            ("show", "67", "--restore", str(tmp_path / f"restore-{HOSTILE_TEXT}")),
            ("diff", events[0].job_key, "67"), ("search",), ("search", "--json"),
            ("search", "--format", "{job_name} {account} {partition} {work_dir}"),
            ("modules",), ("modules", "--json"), ("show", "67:" + "6" * 3)]
    for argv in runs:
        status, output = _sarchive(root, *argv, terminal=True)
        assert status in (0, 1, 3), (argv, output)
        assert len(output) > 20, argv
        assert _terminal_unsafe(output) == [], argv
    # The exact bytes are still there, for a pipe or with --raw.
    assert _sarchive(root, "show", "67", "--script", terminal=False) == (0, script)
    status, raw = _sarchive(root, "show", "67", "--env", "-0", "--raw", terminal=True)
    assert status == 0 and b"\x1b[2J" in raw


def test_an_archive_scan_reports_progress_rewritten_in_place_and_cleared(
        tmp_path: Path) -> None:
    """The archive calls progress per sidecar read; the terminal line is rewritten at most
    every PROGRESS_INTERVAL and erased at the end."""
    calls: list[tuple[int, int]] = []
    archive_of(tmp_path, [job_event(job_id=str(100 + n), user=f"u{n % 2}") for n in range(4)])
    layout = Layout.from_setting("sarchive", Period.DAILY, UTC)
    FileArchive(tmp_path, layout, UTC, lambda *seen: calls.append(seen)).search(
        Criteria(user="u1"), None)
    assert calls == [(1, 0), (2, 1), (3, 1), (4, 2)]

    now = [100.0]
    stream = io.StringIO()
    line = ProgressLine(stream, clock=lambda: now[0])
    line(1, 0)
    assert stream.getvalue() == ""  # a scan shorter than the interval shows nothing
    line.clear()
    assert stream.getvalue() == ""
    now[0] += PROGRESS_INTERVAL
    line(500, 3)
    now[0] += PROGRESS_INTERVAL / 2
    line(600, 4)
    now[0] += PROGRESS_INTERVAL
    line(900, 7)
    line.clear()
    assert stream.getvalue() == ("\rscanned 500 sidecars, 3 jobs match"
                                 "\rscanned 900 sidecars, 7 jobs match\r\x1b[K")


def test_a_sidecar_written_before_modules_were_recorded_gets_them_from_its_contents(
        tmp_path: Path) -> None:
    """Older sidecars lack "modules": show, search --module and modules compute them from the
    script and LOADEDMODULES, as the consumers do."""
    archive = archive_of(tmp_path, [job_event(
        script=b"#!/bin/sh\nmodule load gcc/9.3.0\n", environment=b"LOADEDMODULES=mpi/4\0")])
    sidecar = next(tmp_path.rglob("job.4711_metadata.json"))
    document = json.loads(sidecar.read_bytes())
    assert document.pop("modules") == ["gcc/9.3.0", "mpi/4"]
    sidecar.write_text(json.dumps(document))
    [record] = archive.find(parse_job_spec("4711"))
    assert record.modules == ("gcc/9.3.0", "mpi/4")
    assert [m["job_id"] for m in archive.search(Criteria(module="mpi"), None)] == ["4711"]
    assert archive.module_counts(Criteria()) == {"gcc/9.3.0": 1, "mpi/4": 1}


def test_one_id_on_two_clusters_lists_both_and_cluster_id_picks_one(tmp_path: Path) -> None:
    """An id several clusters used is ambiguous too (status 3, the choices on standard error);
    CLUSTER:ID names one."""
    archive_of(tmp_path, [job_event(cluster="hydra", script=b"echo hydra\n"),
                          job_event(cluster="kraken", script=b"echo kraken\n")])
    command = [sys.executable, "-m", "query.cli", "show", "4711", "--archive", str(tmp_path),
               "--time-zone", "UTC"]
    done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (3, b"")
    assert b"hydra:slurm:4711:" in done.stderr and b"kraken:slurm:4711:" in done.stderr
    assert _sarchive(tmp_path, "show", "kraken:4711", "--script", terminal=False) == (
        0, b"echo kraken\n")


def test_a_torque_array_task_as_qstat_names_it_shows_its_arrays_record(tmp_path: Path) -> None:
    """Torque's 2[1].master is task 1 of the array archived once as 2[].master."""
    event = torque_event()
    archive_of(tmp_path, [event])
    assert _sarchive(tmp_path, "show", "2[1].master", "--script", terminal=False) == (
        0, event.script)
    assert _sarchive(tmp_path, "show", "clusterA:2[].master", "--script", terminal=False) == (
        0, event.script)
