"""Jobs from real sbatch (the producer watching Slurm) and real qsub (watching Grid Engine)
through sarchive-producer, the secured broker and both consumers into the archive and
Elasticsearch, every service connecting with its own principal over SASL_SSL (SCRAM-SHA-512)
or over mutual TLS, and holding exactly the ACLs docs/operations.md lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from runtime.kafka import ACCESS_FAILURE_CAUSES
from testkit.secure_kafka import Listener, SecureKafka, consumer_acls, producer_acls

Harness = Any  # the harness types live in conftest.py files, which tests cannot import

SCRIPTS = [b"#!/bin/bash\n#SBATCH --job-name=secure-a\necho a\n",
           b"#!/bin/bash\n#SBATCH --job-name=secure-b\necho b\n"]


@pytest.fixture
def held_jobs(slurm: Harness) -> Iterator[dict[str, bytes]]:
    """Held jobs (they stay in the spool): job id -> the script given to sbatch."""
    jobs = {slurm.sbatch("--hold", script=script, env={"USER": "secureuser"}): script
            for script in SCRIPTS}
    yield jobs
    slurm.scancel(",".join(jobs))


def grant_pipeline(kafka: SecureKafka, pipeline: Harness) -> None:
    topic, dlq = pipeline.topics.topic, pipeline.topics.dlq
    kafka.grant(producer_acls("producer", topic)
                + consumer_acls("archive", topic, pipeline.group("archive"), dlq)
                + consumer_acls("elastic", topic, pipeline.group("elastic"), dlq))


def assert_delivered_over_secured_listener(
        listener: Listener, kafka: SecureKafka, pipeline: Harness, producer: Harness, *,
        jobs: dict[str, bytes], es: Elasticsearch) -> None:
    """The jobs reach the archive (scripts byte for byte) and the index through the producer
    and both consumers on listener, each as its own principal, with no refusal counted."""
    archive = pipeline.archive(kafka.flags("archive", listener))
    elastic = pipeline.elastic(kafka.flags("elastic", listener))

    def arrived() -> bool:
        for process in (producer, archive, elastic):
            assert process.alive(), process.log_tail()
        return (set(jobs) <= set(pipeline.archived_scripts())
                and set(jobs) <= set(pipeline.indexed(es)))
    producer.wait_until(arrived, 120, f"jobs {sorted(jobs)} archived and indexed",
                        context=pipeline.logs)

    for job_id, script in jobs.items():
        [path] = pipeline.archive_root.rglob(f"job.{job_id}_script")
        assert path.read_bytes() == script
    assert producer.metric("sarchive_producer_outbox_events") == 0
    for cause in ACCESS_FAILURE_CAUSES:
        assert producer.metric("sarchive_producer_kafka_access_failures_total",
                               {"cause": cause}) == 0, producer.log_tail()
        for consumer, service in ((archive, "sarchive-archive"), (elastic, "sarchive-es")):
            assert consumer.metric("sarchive_consumer_kafka_access_failures_total",
                                   {"service": service, "cause": cause}) == 0, consumer.log_tail()
    assert pipeline.stop_all() == [0, 0, 0], pipeline.logs()


@pytest.mark.parametrize("listener", list(Listener))
def test_sbatch_jobs_reach_archive_and_index_over_a_secured_listener(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        listener: Listener, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], slurm: Harness, held_jobs: dict[str, bytes],
        es: Elasticsearch) -> None:
    pipeline = make_pipeline(secure_topics)
    grant_pipeline(secure_kafka, pipeline)
    producer = pipeline.producer(secure_kafka.flags("producer", listener), slurm.state_dir,
                                 slurm.cluster)
    assert_delivered_over_secured_listener(listener, secure_kafka, pipeline, producer,
                                           jobs=held_jobs, es=es)


GRIDENGINE_SCRIPTS = [b"#!/bin/sh\n#$ -N secure_a\necho a\n",
                      b"#!/bin/sh\n#$ -N secure_b\necho b\n"]


@pytest.fixture
def held_gridengine_jobs(gridengine: Harness) -> Iterator[dict[str, bytes]]:
    """Held Grid Engine jobs (they stay in qmaster's spool): job id -> the script given to
    qsub; those still spooled are deleted after."""
    jobs = {str(gridengine.qsub("-h", script=script)): script for script in GRIDENGINE_SCRIPTS}
    yield jobs
    present = [int(job_id) for job_id in jobs if gridengine.record_path(int(job_id)).exists()]
    if present:
        gridengine.qdel(*present)


@pytest.mark.parametrize("listener", list(Listener))
def test_qsub_jobs_reach_archive_and_index_over_a_secured_listener(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        listener: Listener, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], gridengine: Harness,
        held_gridengine_jobs: dict[str, bytes], es: Elasticsearch) -> None:
    """The producer configured for Grid Engine (the spool from its cell's bootstrap file)
    connects with the same secured settings."""
    pipeline = make_pipeline(secure_topics)
    grant_pipeline(secure_kafka, pipeline)
    bootstrap = (Path(gridengine.env["SGE_ROOT"]) / gridengine.env["SGE_CELL"] / "common"
                 / "bootstrap")
    producer = pipeline.gridengine_producer(secure_kafka.flags("producer", listener),
                                            bootstrap, "ge-secure")
    assert_delivered_over_secured_listener(listener, secure_kafka, pipeline, producer,
                                           jobs=held_gridengine_jobs, es=es)
