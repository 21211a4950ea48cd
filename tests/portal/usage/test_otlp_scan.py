"""The C scan of OTLP logs exports (portal/usage/_otlp_scan.c): built by `make install`, reading what it reads as
protobuf does, declining the rest, and never changing read_otlp_protobuf's answer: a differential fuzz over mutated
exports compares the reading with the scan to the reading without it. (The equivalence cases and the 400 random
exports of tests/portal/usage/test_events_fast.py run both ways too.)"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portal.usage import events, otlp_wire
from tests.portal.usage.test_events_fast import LEAN_CASES, WINDOW, _attributes, _export

SOURCE = Path(otlp_wire.__file__).with_name("_otlp_scan.c")


def test_the_scan_is_built_from_the_current_source() -> None:
    """`make install` builds it (k8s/image/steps.sh extensions): without it every export would silently take the
    slower upb reading."""
    from portal.usage import _otlp_scan

    built = Path(_otlp_scan.__file__)
    assert otlp_wire._native_scan is _otlp_scan.scan
    assert built.stat().st_mtime >= SOURCE.stat().st_mtime, f"{built.name} is older than its source: make install"


# --- the wire format, by hand (protobuf.dev/programming-guides/encoding) --------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes | int, wire_type: int = 2) -> bytes:
    tag = varint(number << 3 | wire_type)
    if wire_type == 2:
        assert isinstance(payload, bytes)
        return tag + varint(len(payload)) + payload
    if wire_type == 0:
        assert isinstance(payload, int)
        return tag + varint(payload)
    assert isinstance(payload, bytes)
    return tag + payload


def string_value(text: bytes) -> bytes:
    return field(1, text)


def key_value(key: bytes, value: bytes | None) -> bytes:
    return field(1, key) + (b"" if value is None else field(2, value))


def export(resource: list[bytes], records: list[bytes], *, scope: bytes = b"", resource_extra: bytes = b"") -> bytes:
    resource_message = b"".join(field(1, item) for item in resource)
    scope_logs = (field(1, scope) if scope else b"") + b"".join(field(2, record) for record in records)
    return field(1, field(1, resource_message) + field(2, scope_logs) + resource_extra)


SOURCE_ATTRIBUTE = key_value(b"aigw.source", string_value(b"aigw://eu/gw"))
KEYS = otlp_wire._SCAN_KEYS
COUNT_KEYS = otlp_wire._COUNT_KEYS


def scan(body: bytes) -> Any:
    assert otlp_wire._native_scan is not None
    return otlp_wire._native_scan(body, KEYS, COUNT_KEYS, otlp_wire._SCAN_MAX_LENGTH)


def column(body: bytes, key: str) -> list[Any]:
    [(_, [(_, columns)])] = scan(body)
    return columns[KEYS.index(key)]  # type: ignore[no-any-return]


def record(*attributes: bytes, extra: bytes = b"") -> bytes:
    return b"".join(field(6, item) for item in attributes) + extra


def test_the_scan_reads_texts_counts_and_absent_attributes_per_record() -> None:
    body = export(
        [SOURCE_ATTRIBUTE, key_value(b"n", field(3, 5, 0)), key_value(b"unset", b""), key_value(b"none", None)],
        [
            record(
                key_value(b"route", string_value(b"r/0")),
                key_value(b"input_tokens", string_value(b"0012")),
                key_value(b"output_tokens", string_value(b"-")),
                key_value(b"status_code", string_value(b"")),
            ),
            record(key_value(b"route", b""), key_value(b"input_tokens", None), key_value(b"model", None)),
            record(key_value(b"route", string_value(b"r/0")), key_value(b"input_tokens", string_value(b"999999999"))),
        ],
    )
    [(resource, [(count, columns)])] = scan(body)
    # another kind is None; nothing set (an empty AnyValue, or no value at all) is '' as an empty string is
    assert resource == {"aigw.source": "aigw://eu/gw", "n": None, "unset": "", "none": ""}
    assert count == 3
    by_key = dict(zip(KEYS, columns, strict=True))
    assert by_key["route"] == ["r/0", "", "r/0"]
    assert by_key["route"][0] is by_key["route"][2]  # repeated texts are one object
    assert by_key["input_tokens"] == [12, None, 999999999]
    assert by_key["output_tokens"] == [None, None, None]
    assert by_key["status_code"] == [None, None, None]
    assert by_key["model"] == [None, "", None]
    assert by_key["credential_id"] == [None, None, None]


def test_the_scan_skips_unknown_fields_and_reads_what_envoy_and_the_collector_set() -> None:
    unknown = field(99, 7, 0) + field(98, b"\xff\xfe") + field(97, b"12345678", 1) + field(96, b"1234", 5)
    full_record = (
        field(1, b"\x00" * 8, 1)  # time_unix_nano
        + field(2, 9, 0)  # severity_number
        + field(3, b"INFO")
        + field(5, string_value(b"GET /v1/chat/completions 200"))
        + field(6, key_value(b"route", string_value(b"r/0") + unknown))
        + field(7, 0, 0)
        + field(8, b"\x01\x00\x00\x00", 5)
        + field(9, b"\x01" * 16)
        + field(10, b"\x02" * 8)
        + field(11, b"\x00" * 8, 1)
        + field(12, b"access")
        + unknown
    )
    scope = field(1, b"envoy") + field(2, b"1.0") + field(3, key_value(b"k", field(6, field(1, key_value(b"a", b"")))))
    body = export([SOURCE_ATTRIBUTE], [full_record], scope=scope, resource_extra=field(3, b"https://schema") + unknown)
    assert column(body + unknown, "route") == ["r/0"]


DECLINED = {
    "a key not asked for": record(key_value(b"usage", string_value(b"1"))),
    "a key twice": record(key_value(b"route", string_value(b"a")), key_value(b"route", string_value(b"a"))),
    "an int value": record(key_value(b"route", field(3, 1, 0))),
    "a kvlist value": record(key_value(b"route", field(6, b""))),
    "two members of the oneof": record(key_value(b"route", string_value(b"a") + field(3, 1, 0))),
    "a string value twice": record(key_value(b"route", string_value(b"a") + string_value(b"b"))),
    "a value twice": record(field(1, b"route") + field(2, string_value(b"a")) + field(2, b"")),
    "a key_strindex": record(field(6, field(3, 1, 0))),
    "non-ASCII text": record(key_value(b"route", string_value("é".encode()))),
    "a NUL": record(key_value(b"route", string_value(b"a\x00b"))),
    "invalid UTF-8": record(key_value(b"route", string_value(b"\xff"))),
    "a count with a space": record(key_value(b"input_tokens", string_value(b" 12"))),
    "a count of ten digits": record(key_value(b"input_tokens", string_value(b"1234567890"))),
    "a text past max_length": record(key_value(b"route", string_value(b"r" * 201))),
    "a kvlist body": record(field(5, field(6, b""))),
    "a body twice": record(field(5, string_value(b"a")) + field(5, string_value(b"a"))),
    "severity_text twice": record(field(3, b"INFO") + field(3, b"INFO")),
    "a time with another wire type": record(field(1, 5, 0)),
    "a group": record(b"\x0b\x0c"),  # field 1 start group, end group
    "an end group": record(b"\x0c"),
    "wire type 6": record(b"\x0e"),
    "field number 0": record(b"\x02\x00"),
    "a truncated length": record(b"\x32\x05\x0a"),
    "an 11-byte varint": record(b"\x10" + b"\xff" * 10 + b"\x01"),
}


@pytest.mark.parametrize("what", sorted(DECLINED))
def test_the_scan_declines_what_it_is_not_sure_of(what: str) -> None:
    body = export([SOURCE_ATTRIBUTE], [DECLINED[what]])
    assert scan(body) is None
    assert scan(export([SOURCE_ATTRIBUTE], [record()])) is not None  # the same export without it is read


def test_the_scan_declines_twice_given_resources_scopes_entity_refs_and_deep_nesting() -> None:
    nested = b""
    for _ in range(20):
        nested = field(5, field(1, nested))  # array_value { values: [ ... ] }
    shallow = b""
    for _ in range(3):
        shallow = field(5, field(1, shallow))
    assert scan(export([SOURCE_ATTRIBUTE, key_value(b"deep", shallow)], [record()])) is not None
    for body in (
        export([SOURCE_ATTRIBUTE, key_value(b"deep", nested)], [record()]),
        export([SOURCE_ATTRIBUTE, SOURCE_ATTRIBUTE], [record()]),
        export([SOURCE_ATTRIBUTE], [record()], resource_extra=field(1, b"")),
        export([SOURCE_ATTRIBUTE], [record()], scope=b"", resource_extra=field(3, b"a") + field(3, b"a")),
        field(1, field(1, field(3, b"")) + field(2, b"")),  # entity_refs
        field(1, field(2, field(1, b"") + field(1, b""))),  # the scope twice
        export([SOURCE_ATTRIBUTE], [record()]) + b"\x0a\x05",
        b"\x0a" + b"\xff" * 9 + b"\x01",  # a length past the end (and past 2^63)
    ):
        assert scan(body) is None, body


def test_the_scan_refuses_arguments_it_cannot_use() -> None:
    assert otlp_wire._native_scan is not None
    with pytest.raises(ValueError, match="at most 64 keys"):
        otlp_wire._native_scan(b"", tuple(f"k{n}" for n in range(65)), (), 10)
    with pytest.raises(ValueError, match="ASCII"):
        otlp_wire._native_scan(b"", ("é",), (), 10)
    with pytest.raises(TypeError):
        otlp_wire._native_scan("text", KEYS, COUNT_KEYS, 10)  # type: ignore[arg-type]
    assert otlp_wire._native_scan(memoryview(b""), KEYS, COUNT_KEYS, 10) == []  # type: ignore[arg-type]


# --- the differential fuzz ------------------------------------------------------------------------------------


def _fields(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """(number, wire type, raw value) of each field when data parses as a message (groups not), else None."""
    found, position = [], 0

    def read_varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            if position >= len(data) or shift > 63:
                raise ValueError
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    try:
        while position < len(data):
            tag = read_varint()
            number, wire_type = tag >> 3, tag & 7
            start = position
            if number == 0:
                return None
            if wire_type == 0:
                read_varint()
                value = data[start:position]
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
                if position > len(data):
                    return None
                value = data[start:position]
            elif wire_type == 2:
                length = read_varint()
                if position + length > len(data):
                    return None
                value = data[position : position + length]
                position += length
            else:
                return None
            found.append((number, wire_type, value))
    except ValueError:
        return None
    return found


def _serialize(fields: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(
        varint(number << 3 | wire_type) + (varint(len(value)) if wire_type == 2 else b"") + value
        for number, wire_type, value in fields
    )


_TEXTS = [b"", b"-", b"0", b"12", "é".encode(), b"\xff", b"a\x00b", b"1234567890", b"r" * 201, b"\x0a\x01a"]


def _mutate_fields(data: bytes, rng: random.Random, depth: int = 0) -> bytes:
    """One change somewhere in the message tree, lengths kept right: fields duplicated, dropped, swapped, given
    another wire type or number, unknown fields added, texts replaced; or, where data is not a message, bytes."""
    fields = _fields(data)
    if not fields:
        return _mutate_bytes(data, rng)
    index = rng.randrange(len(fields))
    number, wire_type, value = fields[index]
    if wire_type == 2 and depth < 8 and rng.random() < 0.6 and _fields(value):
        fields[index] = (number, wire_type, _mutate_fields(value, rng, depth + 1))
        return _serialize(fields)
    choice = rng.randrange(8)
    if choice == 0:
        fields.insert(rng.randrange(len(fields) + 1), fields[index])  # duplicated
    elif choice == 1:
        del fields[index]
    elif choice == 2:
        other = rng.randrange(len(fields))
        fields[index], fields[other] = fields[other], fields[index]
    elif choice == 3:
        fields.insert(rng.randrange(len(fields) + 1), (rng.choice([1, 2, 3, 5, 6, 8, 13, 99]), 0, varint(7)))
    elif choice == 4:
        fields[index] = (number, 2, rng.choice(_TEXTS))  # a text, maybe where another wire type belongs
    elif choice == 5:
        fields.insert(index, (rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 40]), rng.choice([1, 5]), b"\x01" * 8))
        if fields[index][1] == 5:
            fields[index] = (fields[index][0], 5, b"\x01" * 4)
    elif choice == 6 and wire_type == 2:
        fields[index] = (number, 2, value + rng.choice(_TEXTS))
    else:
        fields[index] = (rng.randrange(1, 14), wire_type, value)  # another field number, same wire type
    return _serialize(fields)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    position = rng.randrange(len(data))
    choice = rng.randrange(6)
    if choice == 0:
        return data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1 :]
    if choice == 1:
        return data[:position]  # truncated
    if choice == 2:
        return data[:position] + varint(rng.choice([0, 1, 127, 128, 2**31, 2**63, 2**64 - 1])) + data[position:]
    if choice == 3:  # a huge or past-the-end length
        return data[:position] + b"\xff\xff\xff\xff\x0f" + data[position:]
    if choice == 4:
        return data[:position] + rng.choice([b"\xc3\xa9", b"\x80", b"\x00", b"\x0b", b"\x0c"]) + data[position:]
    span = rng.randrange(1, 12)
    return data[:position] + data[position : position + span] * 2 + data[position + span :]


def _seeds() -> list[bytes]:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    seeds = [_export(*records) for records in LEAN_CASES[:8]]
    seeds.append(_export(_attributes(), _attributes(request_id="req-2", input_tokens="-"), extra_resource=True))
    seeds.append(_export(_attributes(**{"event.type": "ai.gateway.llm.usage.v1"}), resource={"source": "s"}))
    full = logs_pb2.LogRecord(
        time_unix_nano=1_796_000_000_000_000_000,
        severity_text="INFO",
        body=common_pb2.AnyValue(string_value="GET /v1 200"),
        trace_id=b"\x01" * 16,
        event_name="access",
    )
    message = logs_service_pb2.ExportLogsServiceRequest.FromString(_export(_attributes(), full))
    message.resource_logs[0].scope_logs[0].scope.name = "envoy"
    message.resource_logs[0].resource.attributes.add(key="tags").value.array_value.values.add(int_value=3)
    seeds.append(message.SerializeToString())
    return seeds


def fuzzed_exports(count: int, seed: int = 2026) -> Iterator[bytes]:
    """Mutations of valid exports, one to three changes each (also run under valgrind and ASan: see the report in
    portal/usage/_otlp_scan.c's history)."""
    rng = random.Random(seed)
    seeds = _seeds()
    for _ in range(count):
        body = rng.choice(seeds)
        for _ in range(rng.choice([1, 1, 2, 3])):
            body = _mutate_fields(body, rng) if rng.random() < 0.7 else _mutate_bytes(body, rng)
        yield body


def _answer(read: Callable[[], list[Any]]) -> object:
    try:
        return read()
    except events.PayloadError as error:
        return (type(error), str(error), error.code, error.status)


def _reference_answer(body: bytes) -> object:
    """The reference reading over the generated classes, refusing what they cannot parse as read_otlp_protobuf does."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    try:
        message = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RuntimeWarning, ValueError):
        message = None
    if message is None:
        return _answer(lambda: otlp_wire.read_otlp_protobuf(b"\x0a\xff", **WINDOW, native=False))
    return _answer(lambda: events.parse_otlp_protobuf(message, **WINDOW))


def test_the_reading_with_the_scan_equals_the_reading_without_it_on_mutated_exports() -> None:
    """3,000 mutations of valid exports: the scan never crashes, and the reading with it, the reading without it and
    the reference give one answer (the same records, or the same refusal)."""
    scanned = declined = 0
    for body in fuzzed_exports(3000):
        result = scan(body)  # must neither crash nor raise: a list, or None when not sure
        assert result is None or isinstance(result, list)
        reference = _reference_answer(body)
        assert _answer(lambda body=body: otlp_wire.read_otlp_protobuf(body, **WINDOW)) == reference, body
        assert _answer(lambda body=body: otlp_wire.read_otlp_protobuf(body, **WINDOW, native=False)) == reference, body
        try:
            native = otlp_wire._native(body, **WINDOW)
        except otlp_wire._NotSure:
            declined += 1
            continue
        scanned += 1
        assert native == reference, body
    # Both sides are exercised: exports the native reading takes, and exports it leaves to the others.
    assert scanned >= 300, scanned
    assert declined >= 1000, declined


def _envoy_record(**replaced: bytes) -> bytes:
    attributes = {
        key: key_value(key.encode(), string_value(str(value).encode())) for key, value in _attributes().items()
    }
    attributes.update(replaced)
    return record(*attributes.values())


# Found by the fuzz above: upb keeps these map entries among the record's (or resource's) unknown fields, so the upb
# reading missed the attribute; and it checked no string of a field its schema leaves out, where the reference does.
FUZZ_FINDINGS = {
    "an unknown field in an attribute": _envoy_record(
        model_response=key_value(b"model_response", string_value(b"gpt-2025")) + field(99, 7, 0)
    ),
    "a key of another wire type": _envoy_record(
        output_tokens=key_value(b"output_tokens", string_value(b"300")) + field(1, 7, 0)
    ),
}


@pytest.mark.parametrize("what", sorted(FUZZ_FINDINGS))
@pytest.mark.parametrize("native", [True, False], ids=["native", "upb"])
def test_attributes_upb_cannot_take_are_read_as_the_reference_reads_them(what: str, native: bool) -> None:
    body = export([SOURCE_ATTRIBUTE], [FUZZ_FINDINGS[what]])
    assert _answer(lambda: otlp_wire.read_otlp_protobuf(body, **WINDOW, native=native)) == _reference_answer(body)


@pytest.mark.parametrize("native", [True, False], ids=["native", "upb"])
def test_invalid_utf8_in_scope_attributes_and_entity_refs_is_refused_as_the_reference_refuses_it(native: bool) -> None:
    bad_scope = field(3, key_value(b"k", string_value(b"\xff")))
    bad_resource = field(1, SOURCE_ATTRIBUTE) + field(3, field(1, b"\xff"))  # entity_refs { type: "\xff" }
    for body in (
        export([SOURCE_ATTRIBUTE], [_envoy_record()], scope=bad_scope),
        field(1, field(1, bad_resource) + field(2, field(2, _envoy_record()))),
    ):
        reference = _reference_answer(body)
        assert isinstance(reference, tuple)
        assert reference[2] == "malformed_otlp"
        assert _answer(lambda body=body: otlp_wire.read_otlp_protobuf(body, **WINDOW, native=native)) == reference
