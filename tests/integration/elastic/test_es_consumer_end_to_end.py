"""The whole way: sbatch on the real Slurm -> sarchive-producer -> Kafka -> sarchive-es ->
a search finds the jobs, with what Slurm stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.waiting import wait_until


@pytest.fixture
def held_jobs(slurm: Any) -> Iterator[list[str]]:
    """Ids of the jobs a test submits --hold (they stay in the spool); cancelled afterwards."""
    job_ids: list[str] = []
    yield job_ids
    if job_ids:
        slurm.scancel(",".join(job_ids))


def test_sbatch_jobs_are_found_by_a_search_once_through_producer_kafka_and_sarchive_es(
        slurm: Any, pipeline: Any, producer_runner: Callable[..., Any], tmp_path: Path,
        held_jobs: list[str]) -> None:
    marker = f"m{uuid.uuid4().hex[:12]}"  # a word only this test's scripts contain
    producer = producer_runner(
        "--cluster", slurm.cluster, "--spool", str(slurm.state_dir),
        "--state-dir", str(tmp_path / "producer-state"), "--brokers", pipeline.bootstrap,
        "--topic", pipeline.topic)
    producer.wait_for_log("watching slurm spool")
    consumer = pipeline.start_consumer()
    scripts = {
        "md": f"#!/bin/bash\n#SBATCH --job-name=md-{marker}\n#SBATCH --time=00:10:00\n"
              f"module load gromacs/2023.1\nsrun gmx_mpi mdrun -deffnm {marker}\n",
        "py": f"#!/bin/bash\n#SBATCH --job-name=py-{marker}\n"
              f"module load python/3.11\npython3 analyse.py {marker}\n",
    }
    by_name = {}
    for name, script in scripts.items():
        job_id = slurm.sbatch("--hold", script=script.encode())
        held_jobs.append(job_id)
        by_name[name] = job_id

    found: set[str] = set()

    def all_found() -> bool:
        found.clear()
        found.update(pipeline.search_ids({"match": {"script": marker}}))
        return found == set(by_name.values())
    wait_until(all_found, 90, f"a search finds the jobs {by_name}", interval=0.5,
               context=lambda: f"found {found}\n{consumer.log_tail()}\n{producer.log_tail()}")

    assert pipeline.search_ids({"bool": {"filter": [
        {"match": {"script": marker}}, {"match": {"script": "gromacs"}}]}}) == {by_name["md"]}
    pipeline.es.indices.refresh(index=pipeline.prefix)
    hits = pipeline.es.search(index=pipeline.prefix, query={"term": {"job_id": by_name["md"]}},
                              size=10)["hits"]["hits"]
    assert len(hits) == 1
    document = hits[0]["_source"]
    assert document["cluster"] == slurm.cluster
    assert document["scheduler"] == "slurm"
    assert document["script"] == scripts["md"]
    assert document["job_name"] == f"md-{marker}"
    assert document["directives"]["time"] == "00:10:00"
    assert hits[0]["_id"] == document["job_key"]
    assert hits[0]["_index"].startswith(f"{pipeline.prefix}-")
    assert consumer.stop() == 0
