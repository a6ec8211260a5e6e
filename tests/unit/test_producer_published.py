"""Published-jobs state: survives restarts, tells reused names apart, stays compact."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import published as published_module
from producer.published import PublishedJobs


def test_published_jobs_survive_a_reopen_and_forgotten_ones_do_not(tmp_path: Path) -> None:
    path = tmp_path / "published.jsonl"
    jobs = PublishedJobs.open(path)
    jobs.add("hash.1/job.1", 111, "c:slurm:1:1")
    jobs.add("hash.2/job.2", 222, "c:slurm:2:2")
    jobs.forget("hash.1/job.1")
    jobs.close()
    reopened = PublishedJobs.open(path)
    assert not reopened.is_published("hash.1/job.1", 111)
    assert reopened.is_published("hash.2/job.2", 222)


def test_a_reused_name_with_another_submit_time_is_not_published(tmp_path: Path) -> None:
    jobs = PublishedJobs.open(tmp_path / "p.jsonl")
    jobs.add("hash.1/job.1", 111, "k")
    assert not jobs.is_published("hash.1/job.1", 999)


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    jobs = PublishedJobs.open(path)
    jobs.add("a", 1, "k1")
    jobs.add("b", 2, "k2")
    jobs.close()
    path.write_bytes(path.read_bytes()[:-6])
    reopened = PublishedJobs.open(path)
    assert reopened.is_published("a", 1)
    assert not reopened.is_published("b", 2)


def test_retain_keeps_only_jobs_still_in_the_spool(tmp_path: Path) -> None:
    jobs = PublishedJobs.open(tmp_path / "p.jsonl")
    for name in "abc":
        jobs.add(name, 1, name)
    jobs.retain(["b"])
    assert len(jobs) == 1 and "b" in jobs


def test_the_file_is_compacted_when_mostly_forgotten_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.jsonl"
    monkeypatch.setattr(published_module, "COMPACT_SLACK", 10)
    jobs = PublishedJobs.open(path)
    for n in range(100):
        jobs.add(f"job.{n}", n, f"k{n}")
        jobs.forget(f"job.{n}")
    jobs.add("kept", 1, "k")
    jobs.flush()
    jobs.add("after", 2, "k2")
    jobs.close()
    assert len(path.read_text().splitlines()) == 2
    reopened = PublishedJobs.open(path)
    assert reopened.is_published("kept", 1) and reopened.is_published("after", 2)
