"""sarchive-es configuration: defaults, what is refused before start, and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.elastic.config import EsConsumerConfig
from consumers.elastic.sink import config_template
from consumers.elastic.template import DEFAULT_SHARDS
from runtime.config import ConfigError, describe_config, load_config


def load(*argv: str, **environ: str) -> EsConsumerConfig:
    return load_config(EsConsumerConfig, list(argv), prog="sarchive-es", description="",
                       environ=environ)


def test_defaults_name_the_es_group_prefix_and_verify_certificates() -> None:
    config = load()
    assert (config.group, config.index_prefix, config.es_verify_certs) == (
        "sarchive-es", "sarchive-jobs", True)
    assert config.identity == "without credentials"


def test_several_urls_from_flags_or_one_comma_list_in_the_environment() -> None:
    assert load("--es-url", "https://a:9200", "--es-url", "https://b:9200").es_url == (
        "https://a:9200", "https://b:9200")
    assert load(SARCHIVE_ES_URL="https://a:9200,https://b:9200").es_url == (
        "https://a:9200", "https://b:9200")


@pytest.mark.parametrize(("argv", "message"), [
    (("--es-url", "ftp://a"), "not an http:// or https:// URL"),
    (("--es-url", "https://u:p@a:9200"), "not in the URL"),
    (("--es-ca-certs", "/ca.pem"), "no es_url is https://"),
    (("--es-api-key", "k", "--es-user", "u"), "either es_api_key or es_user"),
    (("--es-password", "p"), "es_password needs es_user"),
    (("--es-user", "u", "--es-password", "p", "--es-password-file", "/f"), "not both"),
    (("--index-prefix", "Jobs"), "index prefix"),
    (("--bulk-max-docs", "0"), "bulk_max_docs must be at least 1"),
    (("--index-shards", "0"), "index_shards must be at least 1"),
    (("--index-replicas", "-1"), "index_replicas must not be negative"),
    (("--es-timeout", "0"), "es_timeout must be positive"),
    (("--es-max-retries", "-1"), "es_max_retries must not be negative"),
])
def test_contradictory_or_invalid_settings_are_refused_before_start(
        argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(*argv)


def test_shards_and_replicas_reach_the_installed_template() -> None:
    settings = config_template(load("--index-shards", "4", "--index-replicas", "0"))[
        "template"]["settings"]
    assert (settings["index.number_of_shards"], settings["index.number_of_replicas"]) == (4, 0)


def test_replicas_are_the_clusters_default_unless_given() -> None:
    settings = config_template(load())["template"]["settings"]
    assert settings["index.number_of_shards"] == DEFAULT_SHARDS
    assert "index.number_of_replicas" not in settings


def test_password_file_gives_its_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    config = load("--es-user", "u", "--es-password-file", str(secret))
    assert config.es_password_value() == "s3cret"
    assert config.identity == "as user 'u'"


def test_unreadable_password_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = load("--es-user", "u", "--es-password-file", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read es_password_file"):
        config.es_password_value()


def test_password_and_api_key_are_masked_in_the_start_up_line() -> None:
    described = describe_config(load("--es-user", "u", "--es-password", "hunter2"))
    assert described["es_password"] == "********"
    assert "hunter2" not in str(described)
    assert describe_config(load("--es-api-key", "k3y"))["es_api_key"] == "********"
