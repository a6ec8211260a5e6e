"""Jobs from real sbatch through sarchive-producer, the secured broker and both consumers into
the archive and Elasticsearch, every service connecting with its own principal over SASL_SSL
(SCRAM-SHA-512) or over mutual TLS, and holding exactly the ACLs docs/operations.md lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@pytest.mark.parametrize("listener", list(Listener))
def test_sbatch_jobs_reach_archive_and_index_over_a_secured_listener(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        listener: Listener, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], slurm: Harness, held_jobs: dict[str, bytes],
        es: Elasticsearch) -> None:
    pipeline = make_pipeline(secure_topics)
    grant_pipeline(secure_kafka, pipeline)
    producer = pipeline.producer(secure_kafka.flags("producer", listener), slurm.state_dir,
                                 slurm.cluster)
    archive = pipeline.archive(secure_kafka.flags("archive", listener))
    elastic = pipeline.elastic(secure_kafka.flags("elastic", listener))

    def arrived() -> bool:
        for process in (producer, archive, elastic):
            assert process.alive(), process.log_tail()
        return (set(held_jobs) <= set(pipeline.archived_scripts())
                and set(held_jobs) <= set(pipeline.indexed(es)))
    producer.wait_until(arrived, 120, f"jobs {sorted(held_jobs)} archived and indexed",
                        context=pipeline.logs)

    for job_id, script in held_jobs.items():
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
