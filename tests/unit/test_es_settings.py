"""The Elasticsearch connection settings sarchive-es and sarchive share
(runtime.es_settings): the same flags, help and secrecy on both, checked alike."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import certifi
import pytest

from consumers.elastic.config import EsConsumerConfig
from consumers.elastic.sink import elasticsearch_client
from query.cli import main
from query.config import QueryConfig
from runtime.config import ConfigError
from runtime.es_settings import EsConnectionSettings

SHARED = [f.name for f in dataclasses.fields(EsConnectionSettings)]


def test_both_commands_define_the_connection_settings_alike() -> None:
    for config in (EsConsumerConfig, QueryConfig):
        fields = {f.name: f for f in dataclasses.fields(config)}
        for name in SHARED:
            shared = next(f for f in dataclasses.fields(EsConnectionSettings) if f.name == name)
            assert fields[name].metadata == shared.metadata, (config, name)
    # Only the default node differs: sarchive reads the archive when no URL is given.
    assert EsConsumerConfig().es_url == ("http://127.0.0.1:9200",)
    assert QueryConfig().es_url == ()


@pytest.mark.parametrize(("settings", "message"), [
    ({"es_url": ("http://u:p@es1:9200",)}, "not in the URL"),
    ({"es_url": ("ftp://es1",)}, "is not an http:// or https:// URL"),
    ({"es_url": ("http://es1:9200",), "es_ca_certs": "/ca.pem"}, "no es_url is https://"),
    ({"es_api_key": "k", "es_user": "u"}, "either es_api_key or es_user"),
    ({"es_password": "p"}, "es_password needs es_user"),
])
def test_both_commands_refuse_the_same_connection_settings(
        settings: dict[str, object], message: str) -> None:
    for config in (EsConsumerConfig, QueryConfig):
        with pytest.raises(ConfigError, match=message):
            config(**settings)  # type: ignore[arg-type]  # the values are the fields' types


def test_sarchive_exits_2_on_credentials_in_the_url(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "4711", "--es-url", "http://u:secret@es1:9200"]) == 2
    error = capsys.readouterr().err
    assert "give credentials with --es-user/--es-password or --es-api-key" in error
    assert "secret" not in error


@pytest.mark.parametrize(("ca_file", "cause"), [
    ("/no/such/ca.pem", "No such file or directory"),
    ("/", "Is a directory"),
    ("/etc/hostname", "no certificate"),
])
def test_a_ca_file_that_cannot_be_loaded_is_a_configuration_error(ca_file: str,
                                                                  cause: str) -> None:
    settings = EsConnectionSettings(es_url=("https://es1:9200",), es_ca_certs=Path(ca_file))
    with pytest.raises(ConfigError, match=f"es_ca_certs {ca_file}: cannot load it: .*{cause}"):
        settings.es_tls_context()


def test_the_tls_context_trusts_the_ca_file_and_verifies_unless_told_not_to() -> None:
    ca_file = Path(certifi.where())
    verifying = EsConnectionSettings(es_url=("https://es1:9200",), es_ca_certs=ca_file)
    context = verifying.es_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0
    trusting = dataclasses.replace(verifying, es_verify_certs=False).es_tls_context()
    assert trusting.verify_mode == ssl.CERT_NONE
    assert not trusting.check_hostname


def test_sarchive_es_refuses_an_unreadable_ca_file_before_it_connects() -> None:
    config = EsConsumerConfig(es_url=("https://127.0.0.1:9",), es_ca_certs=Path("/no/such"))
    with pytest.raises(ConfigError, match="es_ca_certs /no/such"):
        elasticsearch_client(config)


def test_sarchive_exits_2_with_one_line_on_a_ca_file_it_cannot_load(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "4711", "--es-url", "https://es1:9200",
                 "--es-ca-certs", "/no/such/ca.pem"]) == 2
    assert capsys.readouterr().err == ("sarchive: es_ca_certs /no/such/ca.pem: cannot load it:"
                                       " No such file or directory\n")


def test_sarchive_reports_a_misspelt_variable_and_leaves_other_tools_variables_alone(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARCHIVE_ES_URLS", "http://es1:9200")
    monkeypatch.setenv("SARCHIVE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.delenv("SARCHIVE_ES_URL", raising=False)
    assert main(["show", "4711", "--es-url", "http://u:secret@es1:9200"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "sarchive: SARCHIVE_ES_URLS is set but names no setting (did you mean"
        " SARCHIVE_ES_URL?): it is ignored",
        "sarchive: es_url 'es1': give credentials with --es-user/--es-password or --es-api-key,"
        " not in the URL"]
