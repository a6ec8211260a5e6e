"""A Kafka Metadata request over the wire, standard library only: the broker's readiness probe."""

from __future__ import annotations

import socket
import ssl
import struct


def kafka_metadata_brokers(
    host: str, port: int, timeout: float = 3.0, tls: ssl.SSLContext | None = None
) -> list[tuple[int, str, int]]:
    """Send a real Kafka Metadata request (v4, stdlib only) and return the brokers it lists.

    An open port is not enough: the broker accepts connections before it has joined its
    KRaft quorum. A metadata response naming a broker means it serves clients.
    Kafka 4 dropped Metadata v0-v3, and v4 is the newest version without tagged fields.
    tls: speak it over TLS with this context (a listener with SSL or mutual TLS).
    """
    client_id = b"sarchive-infra"
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body = struct.pack(">ib", -1, 0)  # all topics (null array), no auto-creation
    request = header + body
    with (socket.create_connection((host, port), timeout=timeout) as raw,
          raw if tls is None else tls.wrap_socket(raw, server_hostname=host) as sock):
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        data = _recv_exact(sock, size)
    try:
        return _parse_metadata_brokers(data, correlation_id=7)
    except (struct.error, UnicodeDecodeError) as error:
        # A half-started broker must read as "not ready", like a refused connection.
        raise OSError(f"malformed metadata response: {error}") from error


def _parse_metadata_brokers(data: bytes, correlation_id: int) -> list[tuple[int, str, int]]:
    """Response header v0 + MetadataResponse v4, up to and including the brokers array."""
    got_id, _throttle_ms, count = struct.unpack_from(">iii", data, 0)
    if got_id != correlation_id:
        raise OSError(f"unexpected correlation id {got_id}")
    offset = 12
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        broker_host = data[offset : offset + host_len].decode()
        offset += host_len
        broker_port, rack_len = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)  # rack is a nullable string: length -1 means null
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)
