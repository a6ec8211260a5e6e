"""Ownership from the scheduler, end to end on the real Slurm, Kafka and Elasticsearch: a job
submitted with a spoofed USER is owned by the uid slurmctld holds for it, in the event, the
index and sarchive-web's access control; the spoofed name stays a claim that grants nothing."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from schemas.model import OwnerSource, UserSource
from testkit.web import web_get

SPOOFED = "bob"


def test_a_job_submitted_with_a_spoofed_user_is_owned_by_its_submitter_as_slurm_knows_it(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        slurm: Any, pipeline: Any, producer_runner: Callable[..., Any],
        topic_reader: Callable[..., Any], web_server: Callable[..., Any],
        tmp_path: Path) -> None:
    submitter = pwd.getpwuid(os.getuid()).pw_name
    job_id = slurm.sbatch("--hold", f"--export=USER={SPOOFED}",
                          script=b"#!/bin/bash\necho 'whose job am I?'\n")
    try:
        producer_runner("--cluster", slurm.cluster, "--spool", str(slurm.state_dir),
                        "--state-dir", str(tmp_path / "state"), "--brokers", pipeline.bootstrap,
                        "--topic", pipeline.topic, env={"SLURM_CONF": str(slurm.conf)})
        reader = topic_reader(pipeline.bootstrap, pipeline.topic).read_until(
            lambda r: job_id in r.job_ids(), timeout=60)
        event = next(e for e in reader.events if e.job_id == job_id)
        assert (event.user, event.user_source) == (SPOOFED, UserSource.USER)
        assert (event.owner, event.owner_uid, event.owner_source) == (
            submitter, os.getuid(), OwnerSource.SCHEDULER)

        consumer = pipeline.start_consumer()
        consumer.wait_until(lambda: job_id in pipeline.search_ids(
            {"bool": {"filter": [{"term": {"job_id": job_id}},
                                 {"term": {"owner": submitter}},
                                 {"term": {"owner_source": "SCHEDULER"}},
                                 {"term": {"user": SPOOFED}}]}}),
            90, "the job indexed with its scheduler owner and its user claim", interval=0.3)
        server = web_server("--trusted-proxy", "127.0.0.1")
        page = f"/jobs/{quote(event.job_key)}"
        assert web_get(server.url, page, SPOOFED).status == 404
        assert web_get(server.url, f"/api/jobs/{quote(event.job_key)}", SPOOFED).status == 404
        assert web_get(server.url, page, submitter).status == 200
    finally:
        slurm.scancel(job_id)
