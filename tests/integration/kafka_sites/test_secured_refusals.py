"""What the services do when the secured broker refuses them: a wrong password, an expired or
untrusted certificate, a principal without the ACL it needs. Each logs one clear error naming
the cause, counts it in its metric, keeps every event (the producer's outbox holds them, the
consumers commit nothing), and delivers everything once fixed: a granted ACL heals without a
restart; a password or certificate is read at start, so a fixed one needs a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from testkit.secure_kafka import (
    Listener,
    SecureKafka,
    committed_offsets,
    consumer_acls,
    producer_acls,
    topic_job_ids,
)

Harness = Any  # the harness types live in conftest.py files, which tests cannot import
BadCredentials = Any

JOBS = 3
PRODUCER_FAILURES = "sarchive_producer_kafka_access_failures_total"
CONSUMER_FAILURES = "sarchive_consumer_kafka_access_failures_total"
PUBLISHED = "sarchive_producer_jobs_published_total"


def write_jobs(spool: Harness, first: int = 5000) -> set[str]:
    for job_id in range(first, first + JOBS):
        spool.write_job(job_id, f"#!/bin/bash\necho {job_id}\n".encode())
    return {str(job_id) for job_id in range(first, first + JOBS)}


def wait_refused(process: Harness, metric: str, labels: dict[str, str]) -> None:
    process.wait_until(lambda: (process.metric(metric, labels) or 0) > 0, 60,
                       f"{metric}{labels} counts the refusal")


BAD_CREDENTIALS: dict[str, tuple[Listener, str, str]] = {
    # case: listener, cause, what the one error line says
    "wrong-password": (Listener.SASL_SSL, "authentication", "Kafka authentication failed"),
    "expired-certificate": (Listener.MTLS, "tls", "Kafka TLS verification failed"),
    "untrusted-certificate": (Listener.MTLS, "tls", "Kafka TLS verification failed"),
    "untrusted-broker": (Listener.SASL_SSL, "tls", "Kafka TLS verification failed"),
}


def bad_flags(kafka: SecureKafka, principal: str, case: str, bad: BadCredentials) -> list[str]:
    listener = BAD_CREDENTIALS[case][0]
    if case == "wrong-password":
        return kafka.flags(principal, listener, password_file=bad.wrong_password)
    if case == "untrusted-broker":
        flags = kafka.flags(principal, listener)
        flags[flags.index("--ssl-ca") + 1] = str(bad.foreign_ca)
        return flags
    return kafka.flags(principal, listener,
                       cert=bad.expired if case == "expired-certificate" else bad.untrusted)


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_refused_producer_keeps_events_in_outbox_until_restarted_with_good_credentials(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        case: str, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], synthetic_spool: Harness,
        bad_credentials: BadCredentials) -> None:
    listener, cause, says = BAD_CREDENTIALS[case]
    pipeline = make_pipeline(secure_topics)
    secure_kafka.grant(producer_acls("producer", secure_topics.topic))
    jobs = write_jobs(synthetic_spool)
    # A short shutdown: it would otherwise try to deliver its outbox for 30 s before exiting.
    refused = pipeline.producer(bad_flags(secure_kafka, "producer", case, bad_credentials),
                                synthetic_spool.root, "secure", "--shutdown-timeout", "1")
    wait_refused(refused, PRODUCER_FAILURES, {"cause": cause})
    refused.wait_until(lambda: refused.metric("sarchive_producer_outbox_events") == JOBS, 30,
                       f"the outbox holds the {JOBS} jobs")
    assert len([line for line in refused.log().splitlines() if says in line]) == 1, (
        refused.log_tail())
    assert refused.stop() == 0, refused.log_tail()

    fixed = pipeline.producer(secure_kafka.flags("producer", listener), synthetic_spool.root,
                              "secure")
    fixed.wait_until(lambda: fixed.metric(PUBLISHED) == JOBS, 60,
                     "the jobs kept in the outbox are published")
    assert fixed.metric("sarchive_producer_outbox_events") == 0
    assert sorted(topic_job_ids(secure_kafka.client_properties(), secure_topics.topic)) == (
        sorted(jobs))
    assert fixed.metric(PRODUCER_FAILURES, {"cause": cause}) == 0
    assert fixed.stop() == 0


def test_producer_without_write_acl_delivers_once_granted_without_restart(
        secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], synthetic_spool: Harness) -> None:
    pipeline = make_pipeline(secure_topics)
    jobs = write_jobs(synthetic_spool)
    producer = pipeline.producer(secure_kafka.flags("producer", Listener.SASL_SSL),
                                 synthetic_spool.root, "secure")
    wait_refused(producer, PRODUCER_FAILURES, {"cause": "authorization"})
    says = f"not authorised to write topic {secure_topics.topic}"
    producer.wait_until(lambda: says in producer.log(), 30, f"the log says {says!r}")
    assert producer.metric("sarchive_producer_outbox_events") == JOBS
    assert topic_job_ids(secure_kafka.client_properties(), secure_topics.topic) == []

    secure_kafka.grant(producer_acls("producer", secure_topics.topic))
    producer.wait_until(lambda: producer.metric("sarchive_producer_outbox_events") == 0, 60,
                        "the outbox is empty once the ACL is granted")
    assert sorted(topic_job_ids(secure_kafka.client_properties(), secure_topics.topic)) == (
        sorted(jobs))
    assert len([line for line in producer.log().splitlines() if says in line]) == 1
    assert producer.stop() == 0


def fill_topic(kafka: SecureKafka, topics: Harness, pipeline: Harness,
               spool: Harness) -> set[str]:
    """JOBS jobs on the topic, through a producer with its ACLs, stopped afterwards."""
    kafka.grant(producer_acls("producer", topics.topic))
    jobs = write_jobs(spool)
    producer = pipeline.producer(kafka.flags("producer", Listener.SASL_SSL), spool.root,
                                 "secure")
    producer.wait_until(lambda: producer.metric(PUBLISHED) == JOBS, 60, "the jobs are published")
    assert producer.stop() == 0
    return jobs


def committed(kafka: SecureKafka, group: str, topic: str) -> int:
    """Messages group has committed on topic, summed over its partitions."""
    return sum(committed_offsets(kafka.client_properties(), group, topic))


# case -> the consumer refused with it (each consumer meets two of the four cases)
CONSUMER_REFUSED = {"wrong-password": "elastic", "expired-certificate": "archive",
                    "untrusted-certificate": "elastic", "untrusted-broker": "archive"}
SERVICE = {"archive": "sarchive-archive", "elastic": "sarchive-es"}


def consumed(pipeline: Harness, consumer: str, es: Elasticsearch) -> set[str]:
    """The jobs the consumer has put in its sink."""
    return set(pipeline.archived_scripts() if consumer == "archive" else pipeline.indexed(es))


@pytest.mark.parametrize("case", list(CONSUMER_REFUSED))
def test_refused_consumer_commits_nothing_until_restarted_with_good_credentials(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        case: str, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], synthetic_spool: Harness,
        bad_credentials: BadCredentials, es: Elasticsearch) -> None:
    listener, cause, says = BAD_CREDENTIALS[case]
    consumer = CONSUMER_REFUSED[case]
    pipeline = make_pipeline(secure_topics)
    start = pipeline.archive if consumer == "archive" else pipeline.elastic
    jobs = fill_topic(secure_kafka, secure_topics, pipeline, synthetic_spool)
    secure_kafka.grant(consumer_acls(consumer, secure_topics.topic, pipeline.group(consumer),
                                     secure_topics.dlq))
    refused = start(bad_flags(secure_kafka, consumer, case, bad_credentials))
    wait_refused(refused, CONSUMER_FAILURES, {"service": SERVICE[consumer], "cause": cause})
    assert len([line for line in refused.log().splitlines() if says in line]) == 1, (
        refused.log_tail())
    assert consumed(pipeline, consumer, es) == set()
    assert committed(secure_kafka, pipeline.group(consumer), secure_topics.topic) == 0
    assert refused.stop() == 0, refused.log_tail()

    fixed = start(secure_kafka.flags(consumer, listener))
    fixed.wait_until(lambda: consumed(pipeline, consumer, es) == jobs, 60,
                     f"the jobs in {consumer}'s sink")
    assert fixed.metric(CONSUMER_FAILURES, {"service": SERVICE[consumer], "cause": cause}) == 0
    assert fixed.stop() == 0
    assert committed(secure_kafka, pipeline.group(consumer), secure_topics.topic) == JOBS


# case: the ACL withheld (group or topic read) -> the consumer refused, the listener it uses
WITHHELD_CONSUMER_ACLS = {"group": ("elastic", Listener.SASL_SSL),
                          "topic": ("archive", Listener.MTLS)}


@pytest.mark.parametrize("withheld", list(WITHHELD_CONSUMER_ACLS))
def test_consumer_without_a_read_acl_commits_nothing_and_resumes_once_granted(  # noqa: PLR0917 -- pytest passes fixtures as parameters
        withheld: str, secure_kafka: SecureKafka, secure_topics: Harness,
        make_pipeline: Callable[..., Harness], synthetic_spool: Harness,
        es: Elasticsearch) -> None:
    consumer, listener = WITHHELD_CONSUMER_ACLS[withheld]
    pipeline = make_pipeline(secure_topics)
    start = pipeline.archive if consumer == "archive" else pipeline.elastic
    jobs = fill_topic(secure_kafka, secure_topics, pipeline, synthetic_spool)
    group = pipeline.group(consumer)
    resource = group if withheld == "group" else secure_topics.topic
    all_acls = consumer_acls(consumer, secure_topics.topic, group, secure_topics.dlq)
    missing = [acl for acl in all_acls if acl.name == resource]
    secure_kafka.grant([acl for acl in all_acls if acl not in missing])
    # librdkafka looks at a refused subscription again with its periodic metadata refresh
    # (topic.metadata.refresh.interval.ms, 5 min by default): shortened to keep the test short.
    refused = start(secure_kafka.flags(consumer, listener),
                    "--kafka-property", "topic.metadata.refresh.interval.ms=2000")
    wait_refused(refused, CONSUMER_FAILURES,
                 {"service": SERVICE[consumer], "cause": "authorization"})
    says = f"not authorised to read {withheld} {resource}"
    assert len([line for line in refused.log().splitlines() if says in line]) == 1, (
        refused.log_tail())
    assert consumed(pipeline, consumer, es) == set()
    assert committed(secure_kafka, group, secure_topics.topic) == 0

    secure_kafka.grant(missing)
    refused.wait_until(lambda: consumed(pipeline, consumer, es) == jobs, 60,
                       f"the jobs in {consumer}'s sink once the {withheld} ACL is granted")
    assert refused.stop() == 0
    assert committed(secure_kafka, group, secure_topics.topic) == JOBS
