"""Dead-letter headers: the original headers kept, plus why, which consumer and from where."""

from __future__ import annotations

from typing import TypedDict

from consumers.common.dlq import MAX_DETAIL_CHARS, dead_letter_headers


class Source(TypedDict):
    consumer: str
    topic: str
    partition: int
    offset: int


SOURCE: Source = {"consumer": "sarchive-archive", "topic": "jobs", "partition": 2, "offset": 41}


def test_original_headers_come_first_then_the_dead_letter_headers() -> None:
    headers = dead_letter_headers([("content-type", b"avro"), ("trace", "abc")],
                                  reason="corrupt-body", detail="truncated", **SOURCE)
    assert headers == [
        ("content-type", b"avro"), ("trace", b"abc"),
        ("sarchive-dlq-reason", b"corrupt-body"),
        ("sarchive-dlq-detail", b"truncated"),
        ("sarchive-dlq-consumer", b"sarchive-archive"),
        ("sarchive-dlq-source-topic", b"jobs"),
        ("sarchive-dlq-source-partition", b"2"),
        ("sarchive-dlq-source-offset", b"41"),
    ]


def test_earlier_dead_letter_headers_are_replaced_not_repeated() -> None:
    headers = dead_letter_headers([("sarchive-dlq-reason", b"old"), ("k", None)],
                                  reason="unsafe-path", detail="", **SOURCE)
    assert [k for k, _ in headers].count("sarchive-dlq-reason") == 1
    assert dict(headers)["sarchive-dlq-reason"] == b"unsafe-path"
    assert ("k", b"") in headers


def test_dict_headers_and_no_headers_are_accepted() -> None:
    assert dead_letter_headers({"a": b"1"}, reason="r", detail="d", **SOURCE)[0] == ("a", b"1")
    assert len(dead_letter_headers(None, reason="r", detail="d", **SOURCE)) == 6


def test_long_details_are_cut() -> None:
    headers = dict(dead_letter_headers(None, reason="r", detail="x" * 10_000, **SOURCE))
    assert len(headers["sarchive-dlq-detail"].decode()) == MAX_DETAIL_CHARS
