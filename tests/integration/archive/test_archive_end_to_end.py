"""From real sbatch submissions through sarchive-producer and Kafka to the archive, once per
layout preset: each job's files where the preset says, byte-identical to what Slurm stored."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from schemas.model import JobEvent

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner
    from tests.integration.conftest import SlurmCluster


SCRIPTS = [
    b"#!/bin/bash\n#SBATCH --job-name=e2e-plain\n#SBATCH --time=00:01:00\necho hello\n",
    b"#!/bin/bash\n#SBATCH --job-name=e2e/slash\n# caf\xe9 not UTF-8\necho bytes\n",
]


@pytest.fixture
def submitted(slurm: SlurmCluster) -> Iterator[dict[str, bytes]]:
    """Held jobs (they stay in the spool): job id -> the script given to sbatch."""
    environment = {"USER": "e2euser", "E2E_MULTI": "a\nb=c"}
    jobs = {slurm.sbatch("--hold", script=script, env=environment): script
            for script in SCRIPTS}
    yield jobs
    slurm.scancel(",".join(jobs))


def layout_paths(preset: str, event: JobEvent) -> tuple[str, str | None]:
    """Where each preset puts the script and the environment (None: not archived); written
    out by hand, independently of schemas.archive_layout."""
    t = time.gmtime(event.submit_time / 1000)
    day, year, month = time.strftime("%Y%m%d", t), time.strftime("%Y", t), time.strftime("%m", t)
    job = event.job_id
    backwards = job.zfill(4)[::-1]
    name = (event.job_name or "_unnamed").replace("/", "_")
    assert event.user == "e2euser"
    return {
        "sarchive": (f"{day}/job.{job}_script", f"{day}/job.{job}_environment"),
        "per-user": (f"{event.user}/{year}/{month}/{job}-{name}.sh",
                     f"{event.user}/{year}/{month}/{job}-{name}.env"),
        "xdmod": (f"{day}/{job}.savescript", None),
        "sharded": (f"{event.cluster}/{backwards[:2]}/{backwards[2:4]}/job.{job}_script",
                    f"{event.cluster}/{backwards[:2]}/{backwards[2:4]}/job.{job}_environment"),
    }[preset]


def test_sbatch_to_archive_for_every_layout_preset(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        slurm: SlurmCluster, submitted: dict[str, bytes], producer_runner: Callable[..., Any],
        topic_reader: Callable[..., Any], archive_runner: ArchiveRunner, tmp_path: Path) -> None:
    runner = archive_runner
    producer = producer_runner(
        "--cluster", slurm.cluster, "--scheduler", "slurm", "--spool", str(slurm.state_dir),
        "--state-dir", str(tmp_path / "producer-state"), "--brokers", runner.bootstrap,
        "--topic", runner.topic, "--env-redact", "", "--env-redact-values", "")
    reader = topic_reader(runner.bootstrap, runner.topic).read_until(
        lambda r: set(submitted) <= r.job_ids(), timeout=60)
    assert set(submitted) <= reader.job_ids(), producer.log()[-3000:]
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0
    events = {e.job_id: e for e in reader.events if e.job_id in submitted}

    for preset in ("sarchive", "per-user", "xdmod", "sharded"):
        root = tmp_path / preset
        root.mkdir()
        consumer = runner.start("--layout", preset, group=f"e2e-{preset}", archive=root)
        runner.wait_committed_to_end(group=f"e2e-{preset}")
        assert consumer.stop() == 0
        for job_id, script in submitted.items():
            event = events[job_id]
            script_path, environment_path = layout_paths(preset, event)
            assert (root / script_path).read_bytes() == script, (preset, script_path)
            if environment_path is not None:
                spool_environment = (slurm.job_dir(job_id) / "environment").read_bytes()
                assert (root / environment_path).read_bytes() == spool_environment
        assert [p for p in root.rglob(".sarchive-tmp-*") if p.is_file()] == []
