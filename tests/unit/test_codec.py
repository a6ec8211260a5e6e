"""The job event codec: Avro single-object encoding, round trips and named decode errors."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    CodecError,
    CorruptEventError,
    JobEvent,
    JobEventCodec,
    NotSingleObjectEncodedError,
    Scheduler,
    SpoolFile,
    UnknownSchemaError,
    UserSource,
    make_job_key,
)
from schemas.codec import MAGIC
from schemas.model import parse_environment
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_SCHEMA_VERSION, message_headers, message_key
from testkit.events import job_event

CODEC = JobEventCodec()

texts = st.text(max_size=40)
optional_texts = st.none() | texts
millis = st.integers(min_value=0, max_value=2**53)


@st.composite
def job_events(draw: st.DrawFn) -> JobEvent:
    script = draw(st.binary(max_size=4096))
    cluster = draw(texts)
    scheduler = draw(st.sampled_from(Scheduler))
    job_id = draw(texts)
    submit = draw(millis)
    return job_event(
        cluster=cluster,
        scheduler=scheduler,
        job_id=job_id,
        job_key=make_job_key(cluster, scheduler, job_id, submit),
        submit_time=submit,
        read_time=draw(millis),
        script=script,
        script_size=draw(st.integers(min_value=0, max_value=2**40)),
        script_sha256=hashlib.sha256(script).hexdigest(),
        script_truncated=draw(st.booleans()),
        environment=draw(st.binary(max_size=2048)),
        producer_host=draw(texts),
        producer_version=draw(texts),
        redacted_keys=tuple(draw(st.lists(texts, max_size=5))),
        spool_files=tuple(
            SpoolFile(name, content)
            for name, content in draw(st.lists(st.tuples(texts, st.binary(max_size=512)),
                                               max_size=4))
        ),
        array_job_id=draw(optional_texts),
        array_task_id=draw(optional_texts),
        user=draw(optional_texts),
        user_source=draw(st.sampled_from(UserSource)),
        job_name=draw(optional_texts),
        account=draw(optional_texts),
        partition=draw(optional_texts),
        work_dir=draw(optional_texts),
        time_limit=draw(optional_texts),
        nodes=draw(optional_texts),
        ntasks=draw(optional_texts),
        directives=draw(st.dictionaries(texts, texts, max_size=6)),
    )


@given(job_events())
def test_any_event_survives_encode_then_decode_unchanged(event: JobEvent) -> None:
    assert CODEC.decode(CODEC.encode(event)) == event


@given(job_events())
def test_encoding_starts_with_marker_and_writer_fingerprint(event: JobEvent) -> None:
    data = CODEC.encode(event)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == CODEC.writer.fingerprint


@settings(max_examples=25)
@given(st.integers(min_value=1_000_000, max_value=5_000_000))
def test_scripts_of_several_megabytes_round_trip(size: int) -> None:
    script = bytes(range(256)) * (size // 256)
    event = _event(script=script)
    assert CODEC.decode(CODEC.encode(event)).script == script


def test_fingerprint_is_the_little_endian_crc64_avro_of_the_canonical_form() -> None:
    """Checked against an independent CRC-64-AVRO from the Avro specification's pseudo-code."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in CODEC.writer.canonical_form.encode("utf-8"):
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    assert CODEC.writer.fingerprint == struct.pack("<Q", fp)


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        CODEC.decode(data)


@given(job_events(), st.data())
def test_any_truncation_of_a_valid_message_is_a_named_error(event: JobEvent,
                                                             data: st.DataObject) -> None:
    encoded = CODEC.encode(event)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CodecError):
        CODEC.decode(encoded[:cut])


@given(job_events(), st.data())
def test_flipped_body_bytes_decode_or_raise_a_codec_error(event: JobEvent,
                                                          data: st.DataObject) -> None:
    encoded = bytearray(CODEC.encode(event))
    position = data.draw(st.integers(min_value=10, max_value=len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    with contextlib.suppress(CodecError):
        CODEC.decode(bytes(encoded))


def test_message_without_marker_is_not_single_object_encoded() -> None:
    with pytest.raises(NotSingleObjectEncodedError, match="not an Avro single-object"):
        CODEC.decode(b'{"job_id": "1"}')


def test_empty_message_is_not_single_object_encoded() -> None:
    with pytest.raises(NotSingleObjectEncodedError):
        CODEC.decode(b"")


def test_unknown_fingerprint_is_named_with_its_value() -> None:
    data = MAGIC + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(UnknownSchemaError, match="0102030405060708"):
        CODEC.decode(data)


def test_trailing_bytes_after_the_body_are_corruption() -> None:
    with pytest.raises(CorruptEventError, match="trailing"):
        CODEC.decode(CODEC.encode(_event()) + b"\x00")


def test_corrupt_body_error_chains_the_library_exception() -> None:
    with pytest.raises(CorruptEventError) as raised:
        CODEC.decode(MAGIC + CODEC.writer.fingerprint + b"\xff\xff\xff")
    assert raised.value.__cause__ is not None


def test_codec_errors_carry_a_short_reason_for_the_dead_letter_topic() -> None:
    reasons = {NotSingleObjectEncodedError.reason, UnknownSchemaError.reason,
               CorruptEventError.reason}
    assert reasons == {"not-single-object", "unknown-schema", "corrupt-body"}


def test_job_key_differs_when_the_id_is_reused_at_another_submit_time() -> None:
    first = make_job_key("c", Scheduler.SLURM, "4711", 1_700_000_000_000)
    again = make_job_key("c", Scheduler.SLURM, "4711", 1_700_000_000_000)
    reused = make_job_key("c", Scheduler.SLURM, "4711", 1_800_000_000_000)
    assert first == again
    assert first != reused


def test_kafka_message_key_is_the_utf8_job_key_and_headers_name_type_and_version() -> None:
    event = _event()
    assert message_key(event.job_key) == event.job_key.encode("utf-8")
    headers = dict(message_headers(CODEC))
    assert b"avro" in headers[HEADER_CONTENT_TYPE]
    assert headers[HEADER_SCHEMA_VERSION] == str(CODEC.schema_version).encode()


def test_environment_view_keeps_equals_and_newlines_inside_values() -> None:
    assert parse_environment(b"A=1=2\0B=line1\nline2\0\0") == [("A", "1=2"),
                                                              ("B", "line1\nline2")]


def _event(script: bytes = b"#!/bin/bash\necho hi\n") -> JobEvent:
    return job_event(script=script)
