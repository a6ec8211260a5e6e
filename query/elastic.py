"""The Elasticsearch backend over the standard library's HTTP client.

Not the official client: importing `elasticsearch` alone takes 0.2-0.45 s here, more than
half of `show`'s budget as a process; http.client, json and ssl take ~0.01 s, and the CLI makes
only `_search` requests (docs/performance.md has the measurements). Connections are kept
alive, one per thread and URL: sarchive-web makes two requests per job page, and a new TCP
(and TLS) connection for each cost both sides more than the search itself."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from query.backend import BackendError
from query.config import QueryConfig
from query.criteria import Criteria, module_matches
from query.es_query import (
    PAGE_SIZE,
    Access,
    modules_request,
    msearch_body,
    search_request,
    show_request,
)
from query.jobspec import JobSpec
from query.record import (
    JobRecord,
    Metadata,
    metadata_of,
    modules_of,
    rebuilt_spool_files,
)
from schemas.model import canonical_environment


def auth_headers(user: str | None, password: str | None, api_key: str | None,
                 ) -> dict[str, str]:
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {}


def script_of(source: Mapping[str, Any]) -> bytes:
    """The exact script bytes of a document (script_b64 where they are not UTF-8)."""
    encoded = source.get("script_b64")
    if encoded is not None:
        return base64.b64decode(encoded)
    return str(source.get("script", "")).encode("utf-8")


def environment_entries_of(source: Mapping[str, Any]) -> bytes:
    """The exact environment entries of a document (environment_b64 where the map loses
    some, the map's entries otherwise)."""
    encoded = source.get("environment_b64")
    if encoded is not None:
        return base64.b64decode(encoded)
    return canonical_environment(_environment_of(source))


def _environment_of(source: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (source.get("environment") or {}).items())


def record_of(source: Mapping[str, Any], location: str) -> JobRecord:
    script = script_of(source)
    environment = _environment_of(source)
    entries = environment_entries_of(source)
    modules = source.get("modules")
    metadata = metadata_of(source)
    return JobRecord(
        metadata=metadata, script=script, environment=environment,
        environment_entries=entries,
        modules=tuple(modules) if isinstance(modules, list)
        else modules_of(script, environment),
        spool_files=rebuilt_spool_files(metadata, script, entries), location=location)


# What a kept-alive connection the server has meanwhile closed raises on its next request: the
# request is sent again once on a new connection (a search changes nothing, so it may be).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    body: bytes


class KeptConnections:
    """One persistent HTTP/1.1 connection per thread and base URL: a thread's requests to a
    URL reuse its connection; threads never share one (http.client's are not thread-safe)."""

    def __init__(self, context: ssl.SSLContext | None, timeout: float) -> None:
        self._context = context
        self._timeout = timeout
        self._local = threading.local()

    def post(self, url: str, path: str, data: bytes, headers: Mapping[str, str]) -> Answer:
        """POST data to url + path; OSError or http.client.HTTPException when it fails."""
        kept = self._kept().pop(url, None)
        if kept is not None:
            try:
                return self._exchange(kept, url, path, data, headers)
            except _STALE:
                pass  # closed by the server while idle: once more on a new connection
        return self._exchange(self._connect(url), url, path, data, headers)

    def _kept(self) -> dict[str, http.client.HTTPConnection]:
        kept: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "connections", {})
        return kept

    def _exchange(self, connection: http.client.HTTPConnection, url: str, path: str,
                  data: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            connection.request("POST", path, body=data, headers=dict(headers))
            response = connection.getresponse()
            answer = Answer(response.status, response.read())
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._kept()[url] = connection
        return answer

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                               timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(parts.hostname or "", parts.port,
                                          timeout=self._timeout)


def open_index(config: QueryConfig) -> ElasticsearchIndex:
    """The index the settings name, over their nodes with their credentials and TLS context
    (sarchive's and sarchive-web's); ConfigError if a secret or CA file cannot be read."""
    https = any(url.startswith("https:") for url in config.es_url)
    return ElasticsearchIndex(
        config.es_url, config.index,
        auth_headers(config.es_user, config.es_password_value(), config.es_api_key),
        config.es_tls_context() if https else None, config.es_timeout)


class ElasticsearchIndex:
    """_search requests on the index alias, tried on each URL in turn over kept-alive
    connections; with access, every request is restricted to the jobs it allows
    (es_query.access_filter)."""

    def __init__(self, urls: Sequence[str], index: str, headers: Mapping[str, str],
                 context: ssl.SSLContext | None, timeout: float, *,
                 access: Access | None = None,
                 connections: KeptConnections | None = None) -> None:
        self._urls = [url.rstrip("/") for url in urls]
        self._index = index
        self._headers = {"Content-Type": "application/json", **headers}
        self._context = context
        self._timeout = timeout
        self._access = access
        self._connections = connections or KeptConnections(context, timeout)

    def restricted(self, access: Access) -> ElasticsearchIndex:
        """The same index over the same connections, seen by a reader with access."""
        return ElasticsearchIndex(self._urls, self._index, self._headers, self._context,
                                  self._timeout, access=access,
                                  connections=self._connections)

    @property
    def description(self) -> str:
        return f"Elasticsearch {', '.join(self._urls)} (index {self._index})"

    def find(self, spec: JobSpec) -> list[JobRecord]:
        url, response = self._search(show_request(spec, self._access))
        return [record_of(hit["_source"], f"{url}/{hit['_index']}/_doc/{hit['_id']}")
                for hit in response["hits"]["hits"]]

    def search(self, criteria: Criteria, limit: int | None) -> list[Metadata]:
        found: list[Metadata] = []
        after: list[Any] | None = None
        while limit is None or len(found) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
            _, response = self._search(search_request(criteria, size, after, self._access))
            hits = response["hits"]["hits"]
            found.extend(metadata_of(hit["_source"]) for hit in hits)
            if len(hits) < size:
                break
            after = hits[-1]["sort"]
        return found

    def search_page(self, criteria: Criteria, size: int, after: list[Any] | None = None, *,
                    oldest_first: bool = False) -> tuple[list[Metadata], list[Any] | None]:
        """One page of matching jobs' metadata and the position after its last hit (None
        when no page follows)."""
        _, response = self._search(search_request(criteria, size, after, self._access,
                                                  oldest_first=oldest_first))
        hits = response["hits"]["hits"]
        following = hits[-1]["sort"] if len(hits) == size and hits else None
        return [metadata_of(hit["_source"]) for hit in hits], following

    def first_of_each(self, searches: Sequence[tuple[Criteria, list[Any], bool]],
                      ) -> list[Metadata | None]:
        """For each (criteria, position, oldest_first), the first matching job after position
        (None if there is none), all in one `_msearch` round trip."""
        bodies = [search_request(criteria, 1, position, self._access, oldest_first=oldest)
                  for criteria, position, oldest in searches]
        _, answer = self._post("_msearch", msearch_body(bodies), "application/x-ndjson")
        found: list[Metadata | None] = []
        for response in answer["responses"]:
            if "error" in response:
                raise BackendError(f"Elasticsearch refused a search of an _msearch:"
                                   f" {response['error']}")
            hits = response["hits"]["hits"]
            found.append(metadata_of(hits[0]["_source"]) if hits else None)
        return found

    def module_counts(self, criteria: Criteria) -> dict[str, int]:
        counts: dict[str, int] = {}
        after: dict[str, Any] | None = None
        while True:
            _, response = self._search(modules_request(criteria, after, self._access))
            aggregation = response.get("aggregations", {}).get("modules", {})
            for bucket in aggregation.get("buckets", []):
                module = str(bucket["key"]["module"])
                if criteria.module is None or module_matches(criteria.module, module):
                    counts[module] = int(bucket["doc_count"])
            after = aggregation.get("after_key")
            if after is None or not aggregation.get("buckets"):
                return counts

    def _search(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(the URL that answered, its response); BackendError once every URL failed."""
        return self._post("_search", json.dumps(body).encode(), "application/json")

    def _post(self, endpoint: str, data: bytes, content_type: str,
              ) -> tuple[str, dict[str, Any]]:
        failures = []
        headers = {**self._headers, "Content-Type": content_type}
        for url in self._urls:
            path = f"{urlsplit(url).path}/{self._index}/{endpoint}"
            try:
                answer = self._connections.post(url, path, data, headers)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if answer.status >= 300:
                raise BackendError(self._refusal(url, answer))
            try:
                return url, dict(json.loads(answer.body))
            except ValueError as exc:
                raise BackendError(f"Elasticsearch {url} answered with no JSON: {exc}") from exc
        raise BackendError(f"cannot reach Elasticsearch: {'; '.join(failures)}")

    def _refusal(self, url: str, answer: Answer) -> str:
        try:
            error = json.loads(answer.body).get("error", {})
        except (ValueError, AttributeError):
            error = {}
        kind = error.get("type") if isinstance(error, dict) else None
        reason = error.get("reason") if isinstance(error, dict) else str(error)
        if kind == "index_not_found_exception":
            return (f"Elasticsearch {url} has no index or alias {self._index!r}: has"
                    " sarchive-es indexed anything there?")
        if answer.status == 401:
            return (f"Elasticsearch {url} rejected the credentials (HTTP 401): check"
                    " --es-user and --es-password-file, or --es-api-key")
        if answer.status == 403:
            return f"Elasticsearch {url} denied the search (HTTP 403): {reason}"
        return f"Elasticsearch {url} answered HTTP {answer.status}: {kind}: {reason}"
