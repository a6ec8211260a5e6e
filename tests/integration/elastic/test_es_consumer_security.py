"""sarchive-es against a node with TLS and authentication (x-pack security): wrong
credentials, an unknown CA or missing privileges stop it at start with a clear message and
exit code 1; a user with exactly the documented privileges indexes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.model import JobEvent


def test_wrong_password_stops_at_start_naming_url_and_user_without_the_secret(
        secure_es: Any, pipeline: Any, secure_prefix: str) -> None:
    consumer = pipeline.start_consumer(
        "--es-user", secure_es.user, "--es-password", "not-the-password",
        "--es-ca-certs", str(secure_es.ca), es_url=secure_es.url)
    assert consumer.wait(60) == 1
    log = consumer.log()
    assert f"Elasticsearch at {secure_es.url} (as user '{secure_es.user}') rejected the" \
        " credentials (HTTP 401)" in log
    assert "not-the-password" not in log
    assert "consuming" not in log, "it must stop before taking any message"


def test_unknown_certificate_authority_stops_at_start_with_a_tls_error(
        secure_es: Any, pipeline: Any, secure_prefix: str) -> None:
    consumer = pipeline.start_consumer(
        "--es-user", secure_es.user, "--es-password", secure_es.password,
        es_url=secure_es.url)  # no --es-ca-certs: the system CAs do not know the test CA
    assert consumer.wait(60) == 1
    assert f"TLS with Elasticsearch at {secure_es.url}" in consumer.log()
    assert "CERTIFICATE_VERIFY_FAILED" in consumer.log()


def test_user_without_the_template_privilege_stops_at_start_saying_what_is_missing(
        secure_es: Any, pipeline: Any, secure_prefix: str, reader_user: Any) -> None:
    consumer = pipeline.start_consumer(
        "--es-user", reader_user.name, "--es-password", reader_user.password,
        "--es-ca-certs", str(secure_es.ca), es_url=secure_es.url)
    assert consumer.wait(60) == 1
    log = consumer.log()
    assert f"(as user '{reader_user.name}') denied the request (HTTP 403)" in log
    assert "manage_index_templates" in log


def test_user_with_the_documented_privileges_indexes_over_tls_with_a_password_file(  # noqa: PLR0917 -- pytest passes fixtures as positional parameters
        secure_es: Any, pipeline: Any, writer_user: Any, tmp_path: Path,
        job_events: Callable[..., list[JobEvent]],
        previous_revision_index: Callable[[Any, str], str]) -> None:
    """writer_user's role is the one docs/elasticsearch.md gives, on this test's prefix; the
    jobs go to an index of an earlier template revision, which it gives the new fields."""
    admin = secure_es.client()
    previous_revision_index(admin, pipeline.prefix)
    password_file = tmp_path / "es-password"
    password_file.write_text(writer_user.password + "\n")
    pipeline.produce(job_events(50))
    consumer = pipeline.start_consumer(
        "--es-user", writer_user.name, "--es-password-file", str(password_file),
        "--es-ca-certs", str(secure_es.ca), es_url=secure_es.url)
    consumer.wait_for_metric("sarchive_es_documents_indexed_total", lambda v: v >= 50,
                             timeout=60)
    admin.indices.refresh(index=pipeline.prefix)
    assert admin.count(index=pipeline.prefix)["count"] == 51  # and the earlier job
    admin.close()
    assert consumer.stop() == 0
