"""The Elasticsearch connection settings sarchive-es and sarchive share
(runtime.es_settings): the same flags, help and secrecy on both, checked alike."""

from __future__ import annotations

import dataclasses

import pytest

from consumers.elastic.config import EsConsumerConfig
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
