"""`make demo`'s last step: `sarchive show` of a demo job read back from the file archive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.archive.config import ArchiveConfig
from consumers.archive.sink import ArchiveSink
from infra import demo
from testkit.events import SUBMIT_MS, job_event


def test_the_demo_shows_the_latest_job_of_a_reused_id_and_fails_on_a_missing_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older = job_event(script=b"#!/bin/sh\necho before the reset\n")
    newer = job_event(submit_time=SUBMIT_MS + 60_000, script=b"#!/bin/sh\necho the demo's\n")
    sink = ArchiveSink(ArchiveConfig(archive=tmp_path, time_zone="UTC"), CollectorRegistry())
    sink.prepare()
    assert list(sink.write_batch([older, newer])) == []
    sink.close()
    # The demo's environment names Elasticsearch: the archive must be read all the same.
    env = {**os.environ, "SARCHIVE_ES_URL": "http://127.0.0.1:9"}
    demo.show_with_sarchive(tmp_path, "4711", env)
    shown = capsys.readouterr().out
    assert newer.job_key in shown
    assert "echo the demo's" in shown
    assert older.job_key not in shown
    with pytest.raises(demo.DemoError, match="no job 4712 in the file archive"):
        demo.show_with_sarchive(tmp_path, "4712", env)
