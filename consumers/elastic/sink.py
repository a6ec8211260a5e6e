"""The Elasticsearch sink the shared consumer runner drives: events in, rejections out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import elasticsearch
from prometheus_client import CollectorRegistry

from consumers.common.sink import Rejection
from consumers.elastic.bulk_writer import BulkSettings, BulkWriter
from consumers.elastic.config import EsConsumerConfig
from consumers.elastic.documents import BulkItem, DocumentError, bulk_item
from consumers.elastic.elasticsearch_api import ElasticsearchApi
from consumers.elastic.metrics import REJECTION_REASONS, ElasticsearchMetrics
from consumers.elastic.template import (
    ADDED_PROPERTIES,
    index_pattern,
    index_template,
    template_name,
)
from runtime.config import ConfigError
from schemas.model import JobEvent

log = logging.getLogger(__name__)


class ElasticsearchSink:
    """Indexes each event as one document whose _id is its job key (see bulk_item)."""

    name = "elasticsearch"
    # Elasticsearch's own error types (mapper_parsing_exception, ...) come on top.
    rejection_reasons: tuple[str, ...] = REJECTION_REASONS

    def __init__(self, api: ElasticsearchApi, writer: BulkWriter, index_prefix: str,
                 template: dict[str, Any], metrics: ElasticsearchMetrics) -> None:
        self._api = api
        self._writer = writer
        self._prefix = index_prefix
        self._template = template
        self._metrics = metrics

    def prepare(self) -> None:
        """Install or update the index template (which proves the URL, TLS and credentials),
        then add the fields later revisions added to the indices created before them."""
        self._api.install_template(template_name(self._prefix), self._template)
        self._api.add_fields(index_pattern(self._prefix), ADDED_PROPERTIES)
        log.info("index template %r installed for %s-*", template_name(self._prefix),
                 self._prefix)

    def write_batch(self, events: Sequence[JobEvent]) -> Sequence[Rejection]:
        rejections: list[Rejection] = []
        items: list[BulkItem] = []
        positions: list[int] = []
        for position, event in enumerate(events):
            try:
                items.append(bulk_item(event, self._prefix))
            except DocumentError as exc:
                rejections.append(Rejection(position, exc.reason, str(exc)))
                self._metrics.rejections.labels(exc.reason).inc()
                continue
            positions.append(position)
        refused = self._writer.write(items)
        rejections += [Rejection(positions[p], verdict.reason, verdict.detail)
                       for p, verdict in refused.items()]
        return sorted(rejections, key=lambda r: r.index)

    def close(self) -> None:
        self._api.close()


def elasticsearch_client(config: EsConsumerConfig) -> elasticsearch.Elasticsearch:
    """The client for the configured nodes; it connects only on its first request."""
    options: dict[str, Any] = {
        "request_timeout": config.es_timeout,
        # Connection failures move on to the next node at once; back-off and status
        # retries (429, 5xx) are BulkWriter's, so the transport does none of its own.
        "max_retries": len(config.es_url) - 1,
        "retry_on_status": (),
        "retry_on_timeout": len(config.es_url) > 1,
    }
    if config.es_api_key:
        options["api_key"] = config.es_api_key
    elif config.es_user:
        options["basic_auth"] = (config.es_user, config.es_password_value() or "")
    if any(url.startswith("https://") for url in config.es_url):
        # The client reads the CA file only when it connects: an unreadable one is a
        # configuration error now, not a retry loop later.
        config.es_tls_context()
        options["verify_certs"] = config.es_verify_certs
        if config.es_ca_certs is not None:
            options["ca_certs"] = str(config.es_ca_certs)
        if not config.es_verify_certs:
            # Said once here rather than as a warning on every request.
            options["ssl_show_warn"] = False
            log.warning("TLS certificates of %s are NOT verified (--no-es-verify-certs)",
                        ", ".join(config.es_url))
    try:
        return elasticsearch.Elasticsearch(list(config.es_url), **options)
    except ValueError as exc:
        raise ConfigError(f"Elasticsearch client: {exc}") from exc


def make_sink(config: EsConsumerConfig, registry: CollectorRegistry) -> ElasticsearchSink:
    metrics = ElasticsearchMetrics(registry)
    where = f"Elasticsearch at {', '.join(config.es_url)} ({config.identity})"
    if config.log_level != "DEBUG":
        # The client logs every request at INFO: a line per bulk request is noise; failures
        # are logged by BulkWriter and the runner.
        logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
    api = ElasticsearchApi(elasticsearch_client(config), metrics, where=where)
    writer = BulkWriter(
        api.bulk,
        BulkSettings(max_docs=config.bulk_max_docs, max_bytes=config.bulk_max_bytes,
                     max_retries=config.es_max_retries),
        metrics, where=where)
    return ElasticsearchSink(api, writer, config.index_prefix, config_template(config), metrics)


def config_template(config: EsConsumerConfig) -> dict[str, Any]:
    """The index template the consumer installs with these settings."""
    return index_template(config.index_prefix, shards=config.index_shards,
                          replicas=config.index_replicas)
