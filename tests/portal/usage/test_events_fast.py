"""The fast readings of both wire formats (typed CloudEvents decode, string access-log records) give exactly what
the reference reading gives, event for event, including every case they leave to it."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal.usage import events

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
WINDOW = {"now": NOW, "max_age": timedelta(days=35), "max_skew": timedelta(minutes=5), "max_events": 100}


def _event(**data: Any) -> dict[str, Any]:
    body = {
        "specversion": "1.0",
        "type": "ai.gateway.llm.usage.v1",
        "source": "aigw://eu/gw",
        "id": "e-1",
        "time": "2026-12-04T11:00:00.250Z",
        "subject": "alpha.k1",
        "data": {"credential_id": "alpha.k1", "model_requested": "gpt", "usage": {"input_tokens": 10}},
    }
    body["data"].update(data)
    return body


CLOUDEVENT_CASES = [
    [_event()],
    [_event(usage=None, input_tokens=5, output_tokens=7, status_code=503, duration_ms=12, time_to_first_token_ms=3)],
    [_event(model_override="-", model_response="gpt-2025", provider="", backend="genai/openai", route="r" * 500)],
    [{**_event(), "id": None, "data": {"request_id": "req-9", "credential_id": "", "model": "m"}}],
    [_event(usage={"input_tokens": 2**31 - 1, "cached_input_tokens": 0, "output_tokens": None})],
    [_event(usage={"input_tokens": 2**31})],  # past the bound: rejected by the reference
    [_event(usage={"input_tokens": "12"})],  # a string count: the reference's to read
    [_event(status_code=1000)],
    [_event(), {**_event(), "time": "2026-10-01T00:00:00Z"}],  # one too late
    [_event(), {**_event(), "specversion": "0.3"}],
    [_event(credential_id="a\u0000b")],
    [_event(model="é" * 255), _event(model="é" * 256)],
    [{**_event(), "time": "2026-12-04T11:00:00"}],  # no time zone
    [_event(usage="lots")],
    [_event(provider="openai", backend="genai/openai"), _event(provider="-", backend="genai/openai")],
]


@pytest.mark.parametrize("batch", CLOUDEVENT_CASES)
def test_typed_cloudevents_reading_equals_the_reference(batch: list[dict[str, Any]]) -> None:
    body = json.dumps(batch).encode()
    assert events.read_cloudevents(body, **WINDOW) == events.parse_cloudevents(json.loads(body), **WINDOW)


def _attributes(**overrides: object) -> dict[str, object]:
    attributes: dict[str, object] = {
        "start_time": "2026-12-04T11:00:00.250Z",
        "request_id": "req-1",
        "credential_id": "alpha.k1",
        "route": "httproute/genai/r/rule/0",
        "backend": "genai/openai",
        "model_requested": "gpt",
        "model_override": "-",
        "model_response": "gpt-2025",
        "input_tokens": "1200",
        "cached_input_tokens": "200",
        "cache_creation_input_tokens": "-",
        "output_tokens": "300",
        "reasoning_tokens": "-",
        "status_code": "200",
        "duration_ms": "812",
        "time_to_first_token_ms": "95",
    }
    attributes.update(overrides)
    return {key: value for key, value in attributes.items() if value is not None}


LOG_CASES = [
    _attributes(),
    _attributes(input_tokens="-", output_tokens="-", cached_input_tokens="-", status_code="503"),
    _attributes(input_tokens=" 12"),  # whitespace: the reference's to read
    _attributes(input_tokens=12),  # an int value (OTLP/JSON intValue)
    _attributes(input_tokens="2147483648"),
    _attributes(status_code="1000"),
    _attributes(request_id=None, **{"event.id": "given"}),
    _attributes(credential_id=None),
    _attributes(start_time="2026-10-01T00:00:00Z"),
    _attributes(model_requested="x" * 256),
    _attributes(usage={"input_tokens": 3}),
    _attributes(provider="openai"),
]


@pytest.mark.parametrize("attributes", LOG_CASES)
def test_access_log_reading_equals_the_reference(attributes: dict[str, object]) -> None:
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "aigw.source", "value": {"stringValue": "aigw://eu/gw"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"attributes": [{"key": key, "value": _any(value)} for key, value in attributes.items()]}
                        ]
                    }
                ],
            }
        ]
    }
    [fast] = events.parse_otlp(document, **WINDOW)
    try:
        reference: object = events.record_from_fields(
            index=0,
            event_id=attributes.get("event.id"),
            source="aigw://eu/gw",
            time=attributes.get("start_time"),
            data=events._attributes(document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"]),
            time_field="attributes.start_time",
            prefix="attributes.",
            now=NOW,
            max_age=WINDOW["max_age"],
            max_skew=WINDOW["max_skew"],
        )
    except events.EventProblem as problem:
        reference = events.EventRejection(
            0, str(attributes.get("event.id") or ""), problem.reason, problem.field, problem.message
        )
    assert fast == reference


def _any(value: object) -> dict[str, object]:
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _any(v)} for k, v in value.items()]}}
    return {"stringValue": value}


def test_the_common_records_take_the_fast_readings() -> None:
    earliest, latest = NOW - WINDOW["max_age"], NOW + WINDOW["max_skew"]
    record = events._fast_log_record(
        0, None, "aigw://eu/gw", "2026-12-04T11:00:00.250Z", _attributes(), earliest, latest
    )
    assert (record.input_tokens, record.time_to_first_token_ms) == (1200, 95)
    [typed] = events._BATCH_DECODER.decode(json.dumps([_event()]).encode())
    assert events._fast_record(0, typed, earliest, latest).input_tokens == 10


@pytest.mark.parametrize(("source", "request_id"), [("aigw://eu/gw", "req-1"), ("s", "é|\u2603"), ("", "")])
def test_derived_event_ids_are_uuid5_of_source_and_request_id(source: str, request_id: str) -> None:
    import uuid

    expected = str(uuid.uuid5(events.EVENT_ID_NAMESPACE, f"{source}|{request_id}"))
    assert events.derive_event_id(source, request_id) == expected


def test_derived_event_ids_match_uuid5_for_every_variant_digit() -> None:
    """The variant digit is cut from the digest's hex (8, 9, a or b): 200 ids cover all four."""
    import uuid

    variants = set()
    request_ids = [f"req-{n}" for n in range(200)] + ["é|\u2603", ""]
    expected = [str(uuid.uuid5(events.EVENT_ID_NAMESPACE, f"aigw://eu/gw|{request_id}")) for request_id in request_ids]
    for request_id, derived in zip(request_ids, expected, strict=True):
        assert events.derive_event_id("aigw://eu/gw", request_id) == derived
        variants.add(derived[19])
    assert variants == {"8", "9", "a", "b"}


def test_protobuf_records_read_field_by_field_equal_their_json_form() -> None:
    """The protobuf export is read without converting it to JSON first; the answer is the JSON reading's."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    def string(key: str, value: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    def number(key: str, value: int) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))

    records = [
        logs_pb2.LogRecord(attributes=[string(key, str(value)) for key, value in _attributes().items()]),
        logs_pb2.LogRecord(  # ints, an empty string, and the body as a kvlist
            time_unix_nano=1_796_000_000_000_000_000,
            attributes=[number("input_tokens", 7), string("route", ""), string("request_id", "r-2")],
            body=common_pb2.AnyValue(
                kvlist_value=common_pb2.KeyValueList(
                    values=[string("credential_id", "alpha.k1"), string("model_requested", "gpt")]
                )
            ),
        ),
        logs_pb2.LogRecord(attributes=[string("start_time", "not a time"), string("request_id", "r-3")]),
    ]
    message = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=[string("aigw.source", "aigw://eu/gw")]),
                scope_logs=[logs_pb2.ScopeLogs(log_records=records)],
            )
        ]
    )
    fast = events.parse_otlp_protobuf(message, **WINDOW)
    assert fast == events.parse_otlp(MessageToDict(message), **WINDOW)
    assert [type(item).__name__ for item in fast] == ["UsageRecord", "UsageRecord", "EventRejection"]


# --- OTLP protobuf, the lean reading (portal.usage.otlp_wire) ---------------------------------------------------


def _export(*records: object, resource: dict[str, object] | None = None, extra_resource: bool = False) -> bytes:
    """An ExportLogsServiceRequest body; records are attribute dicts (str and int values, dicts as kvlists) or
    LogRecord messages as they are."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    def value(item: object) -> common_pb2.AnyValue:
        if isinstance(item, bool):
            return common_pb2.AnyValue(bool_value=item)
        if isinstance(item, bytes):
            return common_pb2.AnyValue(bytes_value=item)
        if isinstance(item, int):
            return common_pb2.AnyValue(int_value=item)
        if isinstance(item, dict):
            return common_pb2.AnyValue(
                kvlist_value=common_pb2.KeyValueList(
                    values=[common_pb2.KeyValue(key=k, value=value(v)) for k, v in item.items()]
                )
            )
        return common_pb2.AnyValue(string_value=str(item))

    def attributes(items: dict[str, object]) -> list[common_pb2.KeyValue]:
        return [common_pb2.KeyValue(key=key, value=value(item)) for key, item in items.items()]

    messages = [
        record if isinstance(record, logs_pb2.LogRecord) else logs_pb2.LogRecord(attributes=attributes(record))  # type: ignore[arg-type]
        for record in records
    ]
    resource_logs = [
        logs_pb2.ResourceLogs(
            resource=resource_pb2.Resource(attributes=attributes(resource or {"aigw.source": "aigw://eu/gw"})),
            scope_logs=[logs_pb2.ScopeLogs(log_records=messages)],
        )
    ]
    if extra_resource:
        resource_logs.append(
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=attributes({"aigw.source": "aigw://us/gw"})),
                scope_logs=[logs_pb2.ScopeLogs(log_records=messages[:1])],
            )
        )
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=resource_logs).SerializeToString()


def _reference(body: bytes) -> list[object]:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    return events.parse_otlp_protobuf(logs_service_pb2.ExportLogsServiceRequest.FromString(body), **WINDOW)  # type: ignore[return-value]


LEAN_CASES = [
    *([attributes] for attributes in LOG_CASES),
    [_attributes(), _attributes(request_id="req-2", input_tokens="7")],
    [_attributes(source="-")],  # chosen by the reference, then refused
    [_attributes(**{"aigw.source": "aigw://eu/other"})],  # the record's own source wins over the resource's
    [_attributes(**{"event.type": "-"})],
    [_attributes(**{"event.type": "ai.gateway.llm.usage.v1"})],
    [_attributes(provider="-")],  # '-' is the provider (empty), not a reason to read the backend
    [_attributes(provider="")],
    [_attributes(start_time="-")],
    [_attributes(start_time="")],
    [_attributes(model_requested="é")],  # not ASCII: the reference's
    [_attributes(route="r" * 127), _attributes(request_id="q", route="r" * 128)],  # a two-byte length
    [_attributes(credential_id="a\x00b")],
    [_attributes(status_code=True)],
    [_attributes(subject="alpha.k1", credential_id=None)],
    [_attributes(request_id=None)],  # no id at all
    # Bytes values whose encoding looks like a short string's but for its first byte: read by the reference only.
    [_attributes(request_id=b"req-1"), _attributes(request_id=b"req-2")],
    [_attributes(start_time=b"2026-12-06T00:00:00Z"), _attributes(request_id="req-2")],
    [_attributes(request_id="-"), _attributes(request_id="req-2")],
]


# native: with the C scan (portal/usage/_otlp_scan.c) first, or without it (the upb lean reading, then the reference).
NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native", "upb"])


@NATIVE
@pytest.mark.parametrize("records", LEAN_CASES)
def test_lean_protobuf_reading_equals_the_reference(records: list[dict[str, object]], native: bool) -> None:
    from portal.usage import otlp_wire

    body = _export(*records)
    assert otlp_wire.read_otlp_protobuf(body, **WINDOW, native=native) == _reference(body)


@NATIVE
def test_lean_protobuf_reading_takes_bodies_sources_and_several_resources_as_the_reference(native: bool) -> None:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    from portal.usage import otlp_wire

    def record(**body: common_pb2.AnyValue) -> logs_pb2.LogRecord:
        message = _export(_attributes())
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        parsed = logs_service_pb2.ExportLogsServiceRequest.FromString(message).resource_logs[0].scope_logs[0]
        result = logs_pb2.LogRecord()
        result.CopyFrom(parsed.log_records[0])
        for key, value in body.items():
            getattr(result, key).CopyFrom(value)
        return result

    cases = [
        _export(record(body=common_pb2.AnyValue(string_value="GET /v1/chat/completions 200"))),
        _export(
            record(body=common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[]))),  # the reference's
        ),
        _export(_attributes(), _attributes(request_id="r-2"), extra_resource=True),
        _export(_attributes(), resource={"source": "aigw://eu/alt"}),
        _export(_attributes(), resource={}),
        _export(_attributes(start_time=None)),  # no start_time and no timeUnixNano
    ]
    for body in cases:
        assert otlp_wire.read_otlp_protobuf(body, **WINDOW, native=native) == _reference(body)


@NATIVE
def test_lean_protobuf_reading_is_taken_for_envoys_records_and_refuses_what_is_not_an_export(native: bool) -> None:
    from portal.usage import otlp_wire

    body = _export(_attributes(), _attributes(request_id="req-2"))
    lean = otlp_wire._lean(body, **WINDOW)  # raises _NotSure if it left the export to the reference
    assert [type(item).__name__ for item in lean] == ["UsageRecord", "UsageRecord"]
    assert lean == _reference(body)
    assert otlp_wire._native(body, **WINDOW) == lean  # the C scan takes it too
    with pytest.raises(events.PayloadError) as refused:
        otlp_wire.read_otlp_protobuf(b"\x0a\xff\xff", **WINDOW, native=native)
    assert refused.value.code == "malformed_otlp"
    too_large = _export(*[_attributes(request_id=f"r-{n}") for n in range(101)])
    with pytest.raises(events.PayloadError) as too_many:
        otlp_wire.read_otlp_protobuf(too_large, **WINDOW, native=native)
    assert too_many.value.status == 413


# --- OTLP protobuf, the columnar reading of a uniform scope (portal.usage.otlp_wire._columns) --------------------

_VARIANTS: dict[str, list[object]] = {
    "credential_id": ["alpha.k1", "beta.k2", "-", "", None, "a\x00b", "é"],
    "route": ["httproute/genai/r/rule/0", "r" * 127, "r" * 128, None],
    "model_requested": ["gpt", "claude", "-", None, "x" * 256],
    "model_override": ["-", "gpt", None],
    "model_response": ["gpt-2025", "gpt", "-", None],
    "model": [None, "m"],
    "input_tokens": ["1200", "-", "0", "999999999", "2147483648", " 12", 12, None, ""],
    "cached_input_tokens": ["200", "-", None],
    "output_tokens": ["300", "-", "0012", None],
    "reasoning_tokens": ["-", "40", None],
    "status_code": ["200", "503", "999", "1000", None, "-"],
    "duration_ms": ["812", None],
    "provider": [None, "openai", "-", ""],
    "backend": ["genai/openai", None],
    "start_time": ["2026-12-04T11:00:00.250Z", "2026-12-04T12:00:00+01:00", "2026-10-01T00:00:00Z", "-", None],
    "request_id": ["req", None, "-"],
    "event.id": [None, "given"],
    "event.type": [None, "ai.gateway.llm.usage.v1", "other"],
    "subject": [None, "alpha.k1"],
    "aigw.source": [None, "aigw://eu/other"],
}


@NATIVE
def test_columnar_reading_equals_the_reference_on_random_exports(native: bool) -> None:
    """400 random exports: most records share one shape (as a gateway's do), with a few values varied; each
    variation may be one the reading must leave to the row-wise reading or the reference. The answer is always the
    reference's, and the columnar reading (and the C scan's) is taken for at least the plain ones."""
    import random

    from portal.usage import otlp_wire

    rng = random.Random(1604)
    taken = scanned = 0
    for case in range(400):
        varied = rng.sample(sorted(_VARIANTS), rng.choice([0, 0, 1, 2, 3]))
        shape = {key: rng.choice(_VARIANTS[key]) for key in varied}
        records = []
        for n in range(rng.randrange(1, 12)):
            overrides: dict[str, object] = {"request_id": f"req-{case}-{n}", **shape}
            if rng.random() < 0.2 and varied:  # one record differs from the shape
                key = rng.choice(varied)
                overrides[key] = rng.choice(_VARIANTS[key])
            if overrides.get("request_id") == "req":
                overrides["request_id"] = f"req-{case}-{n}"
            records.append(_attributes(**overrides))
        body = _export(*records)
        assert otlp_wire.read_otlp_protobuf(body, **WINDOW, native=native) == _reference(body), (case, records)
        if native:
            try:
                assert otlp_wire._native(body, **WINDOW) == _reference(body), (case, records)
                scanned += 1
            except otlp_wire._NotSure:
                pass
        earliest, latest = NOW - WINDOW["max_age"], NOW + WINDOW["max_skew"]
        try:  # an int value's encoding is not UTF-8 text: the lean schema itself refuses it
            scope = otlp_wire._LEAN_EXPORT.FromString(body).resource_logs[0].scope_logs[0].log_records
            columnar = otlp_wire._columns(0, scope, "aigw://eu/gw", earliest, latest, otlp_wire._Memo())
        except (otlp_wire._NotSure, otlp_wire.DecodeError, UnicodeError):
            continue
        taken += 1
        assert columnar == _reference(body), (case, records)
        # equal aware datetimes may differ in zone; the stored month and hour are the UTC ones
        assert {record.event_time.tzinfo for record in columnar} == {UTC}, (case, records)
    assert taken >= 100  # the plain and mildly varied exports take the columnar reading
    assert scanned >= 100 or not native


# --- CloudEvents, the columnar reading of a decoded batch (portal.usage.events._columnar_records) -----------------

_CE_VARIANTS: dict[str, list[Any]] = {
    "credential_id": ["alpha.k1", "beta.k2", "-", "", None, "a\u0000b", "é", "x" * 201],
    "route": ["httproute/genai/r/rule/0", "r" * 500, "r" * 501, None],
    "model_requested": ["gpt", "claude", "-", None, "x" * 256],
    "model_override": ["-", "gpt", None],
    "model_response": ["gpt-2025", "gpt", None],
    "model": [None, "m"],
    "provider": [None, "openai", "", "-"],
    "backend": [None, "genai/openai"],
    "status_code": [200, 503, 999, 1000, -1, None],
    "duration_ms": [812, None, -5],
    "request_id": [None, "req-1", "-", "a\u0000b"],
    "usage": [
        {"input_tokens": 10},
        {"input_tokens": 2**31 - 1, "output_tokens": 0},
        {"input_tokens": 2**31},
        {"input_tokens": -1},
        {"input_tokens": "12"},
        None,
    ],
    "input_tokens": [None, 7, 2**31],
}
_CE_TOP: dict[str, list[Any]] = {
    "id": ["e", None, "", "-", "x" * 201],
    "subject": ["alpha.k1", None, "-", "y" * 201],
    "time": [
        "2026-12-04T11:00:00.250Z",
        "2026-12-04T12:00:00+01:00",
        "2026-10-01T00:00:00Z",
        "2026-12-04T11:00:00",
        "",
    ],
    "source": ["aigw://eu/gw", "", "-", "aigw://us/gw"],
    "specversion": ["1.0", "0.3"],
}


def random_cloudevent_batches(count: int = 1000) -> Iterator[tuple[int, list[dict[str, Any]], bytes]]:
    """(case, batch, body) of `count` random batches of events sharing one shape, a few values varied (some the
    fast readings must leave to the per-event reading or the reference); the same batches on every run."""
    rng = random.Random(1605)
    for case in range(count):
        data_keys = rng.sample(sorted(_CE_VARIANTS), rng.choice([0, 1, 2, 3, 4]))
        top_keys = rng.sample(sorted(_CE_TOP), rng.choice([0, 0, 1, 2]))
        batch = []
        for n in range(rng.randrange(1, 10)):
            event = _event(**{key: rng.choice(_CE_VARIANTS[key]) for key in data_keys})
            event.update({key: rng.choice(_CE_TOP[key]) for key in top_keys})
            if event.get("id") == "e":
                event["id"] = f"e-{case}-{n}"
            batch.append(event)
        yield case, batch, json.dumps(batch).encode()


def test_columnar_cloudevents_reading_equals_the_reference_on_random_batches() -> None:
    """1,000 random batches of events sharing one shape, a few values varied (some the reading must leave to the
    per-event reading or the reference); the answer is always the reference's, zones included, and the columnar
    reading is taken for the plain ones."""
    earliest, latest = NOW - WINDOW["max_age"], NOW + WINDOW["max_skew"]
    taken = 0
    for case, batch, body in random_cloudevent_batches():
        reference = events.parse_cloudevents(json.loads(body), **WINDOW)
        assert events.read_cloudevents(body, **WINDOW) == reference, (case, batch)
        try:
            columnar = events._columnar_records(events._BATCH_DECODER.decode(body), earliest, latest)
        except (events._NotSure, events.msgspec.DecodeError):
            continue
        taken += 1
        assert columnar == reference, (case, batch)
        assert {record.event_time.tzinfo for record in columnar} == {UTC}, (case, batch)
    assert taken >= 100
