"""The Elasticsearch backend keeps its HTTP connections alive: a thread's requests reuse one
connection, threads do not share one, and a connection the server closed while it was idle
is replaced without the request failing. Against a loopback HTTP/1.1 server in the test."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from query.backend import BackendError
from query.criteria import Criteria
from query.elastic import ElasticsearchIndex
from query.es_query import Access

EMPTY = json.dumps({"hits": {"hits": []}}).encode()


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        # The connection each request came on, numbered as accepted (a client address may
        # be reused by the next connection once the server closed the last).
        self.connections: list[int] = []
        self.accepted = itertools.count()
        self.close_after_answer = False
        self.status = 200


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def setup(self) -> None:
        super().setup()
        self.connection_number = next(self.server.accepted)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.connections.append(self.connection_number)
        # Closed after the answer without saying so: what an idle timeout on the server does.
        # Decided before answering: once answered, the test may already have changed the flag.
        self.close_connection = self.server.close_after_answer
        body = EMPTY if self.server.status == 200 else json.dumps(
            {"error": {"type": "search_phase_execution_exception", "reason": "bad"}}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


def index_on(server: Recorder) -> ElasticsearchIndex:
    return ElasticsearchIndex([f"http://127.0.0.1:{server.server_address[1]}"], "jobs", {},
                              None, 5)


def test_a_threads_requests_reuse_one_connection_and_threads_do_not_share_it(
        server: Recorder) -> None:
    index = index_on(server)
    for _ in range(3):
        index.search_page(Criteria(), 1)
    assert len(server.connections) == 3 and len(set(server.connections)) == 1
    other = threading.Thread(target=lambda: index.search_page(Criteria(), 1))
    other.start()
    other.join()
    assert len(set(server.connections)) == 2


def test_a_restricted_index_reuses_the_connections_of_the_index_it_restricts(
        server: Recorder) -> None:
    index = index_on(server)
    index.search_page(Criteria(), 1)
    index.restricted(Access(user="alice")).search_page(Criteria(), 1)
    assert len(set(server.connections)) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_answered(
        server: Recorder) -> None:
    index = index_on(server)
    server.close_after_answer = True
    index.search_page(Criteria(), 1)
    server.close_after_answer = False
    assert index.search_page(Criteria(), 1) == ([], None)
    assert len(server.connections) == 2 and len(set(server.connections)) == 2


def test_a_refusal_is_a_backend_error_naming_it_and_the_connection_stays_usable(
        server: Recorder) -> None:
    index = index_on(server)
    server.status = 400
    with pytest.raises(BackendError, match="HTTP 400: search_phase_execution_exception: bad"):
        index.search_page(Criteria(), 1)
    server.status = 200
    index.search_page(Criteria(), 1)
    assert len(set(server.connections)) == 1


def test_an_unreachable_url_is_a_backend_error_naming_it() -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = closed.server_address[1]
    closed.server_close()
    index = ElasticsearchIndex([f"http://127.0.0.1:{port}"], "jobs", {}, None, 5)
    with pytest.raises(BackendError, match=f"cannot reach Elasticsearch: http://127.0.0.1:{port}"):
        index.search_page(Criteria(), 1)
