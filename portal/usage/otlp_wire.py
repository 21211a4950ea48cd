"""OTLP/HTTP protobuf exports of the gateway's access log, read the lean way: one C parse into a wire-compatible
subset of the OTLP logs schema whose attributes are maps of encoded values, then plain string checks. Pure.

Why: the generated OTLP classes (upb) parse fast, but reading a record's attributes through them builds a Python
wrapper for every KeyValue, AnyValue and string, about 13 µs a record for Envoy's sixteen attributes, more than the
whole CloudEvents reading. The protobuf encoding of `repeated KeyValue {string key = 1; AnyValue value = 2;}` is the
encoding of `map<string, string>` (a map entry is a message with the key in field 1 and the value in field 2:
protobuf.dev/programming-guides/encoding, "Maps"), so declaring the attributes as that map makes upb hand over a
plain dict, built in C, whose values are the AnyValue messages' own bytes as text (UTF-8 checked by upb, as the
reference parse checks every string). An AnyValue holding a short string is `0x0A <length> <text>` (field 1,
wire type 2; protobuf.dev encoding, "Length-Delimited Records"), so its text is the value after two characters.

The lean reading takes only what it is sure of: every value it reads is an ASCII string shorter than 128 bytes
(one-byte length, so characters are bytes), the body is absent or a string, and no record needs the reference's
judgement (missing or malformed fields, times outside the window, an unexpected type). Anything else sends the
whole export to the reference reading (`events.parse_otlp_protobuf` over the generated classes), which reports each
record's problem; so both give the same answer for every export (tests/portal/usage/test_events_fast.py).

Before both, where it is built, the native reading (_native): the export scanned in C (portal/usage/_otlp_scan.c)
into columns, read by the same rules; whatever it is not sure of goes to the lean reading, whole
(tests/portal/usage/test_otlp_scan.py compares all three, on a differential fuzz too)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import repeat
from operator import attrgetter, itemgetter, methodcaller
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from portal.usage import events
from portal.usage.contracts import EventRejection, ReadRecords, UsageRecord


def _native_scanner() -> Callable[[bytes, tuple[str, ...], tuple[str, ...], int], list[Any] | None] | None:
    """The C scan, built by `make install` and the image's build (k8s/image/steps.sh extensions); None where it is
    not built, and then the upb reading is the only one (tests/portal/usage/test_otlp_scan.py requires it built)."""
    try:
        from portal.usage._otlp_scan import scan
    except ImportError:
        return None
    return scan


_native_scan = _native_scanner()


def _lean_schema() -> Any:
    """The export message of a private pool: OTLP's field numbers and wire types (opentelemetry-proto
    logs/v1/logs.proto, resource/v1/resource.proto), attributes as map<string, string>. Every field an exporter
    commonly sets is declared, so that an export parses without unknown fields; one that leaves any (a field left
    out here, such as entity_refs or the scope's attributes, whose strings upb would check in the reference) is the
    reference's (_unknown_fields)."""
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    fixed64 = descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64
    fixed32 = descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32
    int32 = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
    uint32 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT32
    bytes_ = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(
        name="portal_otlp_lean.proto", package="portal.otlp_lean", syntax="proto3"
    )

    def add(holder: Any, name: str, fields: list[tuple[str, int, int, int, str]]) -> Any:
        proto = holder.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".portal.otlp_lean.{type_name}"
        return proto

    def attributes_map(proto: Any, number: int) -> tuple[str, int, int, int, str]:
        # A map field is a repeated entry message nested in its holder, marked map_entry.
        entry = add(
            proto.nested_type, "AttributesEntry", [("key", 1, string, optional, ""), ("value", 2, string, optional, "")]
        )
        entry.options.map_entry = True
        return ("attributes", number, message, repeated, f"{proto.name}.AttributesEntry")

    resource = add(file.message_type, "Resource", [("dropped_attributes_count", 2, uint32, optional, "")])
    resource.field.add(name="attributes", number=1, type=message, label=repeated)
    add(
        file.message_type,
        "Scope",
        [
            ("name", 1, string, optional, ""),
            ("version", 2, string, optional, ""),
            ("dropped_attributes_count", 4, uint32, optional, ""),
        ],
    )
    record = add(
        file.message_type,
        "LogRecord",
        [
            ("time_unix_nano", 1, fixed64, optional, ""),
            ("severity_number", 2, int32, optional, ""),  # an open enum in proto3: any int32
            ("severity_text", 3, string, optional, ""),
            ("body", 5, string, optional, ""),
            ("dropped_attributes_count", 7, uint32, optional, ""),
            ("flags", 8, fixed32, optional, ""),
            ("trace_id", 9, bytes_, optional, ""),
            ("span_id", 10, bytes_, optional, ""),
            ("observed_time_unix_nano", 11, fixed64, optional, ""),
            ("event_name", 12, string, optional, ""),
        ],
    )
    for holder, number in ((resource, 1), (record, 6)):
        name, number, kind, label, type_name = attributes_map(holder, number)
        field = next((item for item in holder.field if item.name == name), None) or holder.field.add(name=name)
        field.number, field.type, field.label, field.type_name = number, kind, label, f".portal.otlp_lean.{type_name}"
    add(
        file.message_type,
        "ScopeLogs",
        [
            ("scope", 1, message, optional, "Scope"),
            ("log_records", 2, message, repeated, "LogRecord"),
            ("schema_url", 3, string, optional, ""),
        ],
    )
    add(
        file.message_type,
        "ResourceLogs",
        [
            ("resource", 1, message, optional, "Resource"),
            ("scope_logs", 2, message, repeated, "ScopeLogs"),
            ("schema_url", 3, string, optional, ""),
        ],
    )
    add(file.message_type, "Export", [("resource_logs", 1, message, repeated, "ResourceLogs")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("portal.otlp_lean.Export"))


_LEAN_EXPORT = _lean_schema()


def _unknown_fields(message: Any) -> int:
    """How many unknown fields upb kept on a Resource, scope or LogRecord of the lean schema. upb keeps a map entry
    it cannot take (one holding an unknown field, or a key or value of another wire type) among its holder's unknown
    fields, so the lean reading would miss an attribute the reference reads; and it checks no string in a field the
    lean schema leaves out (entity_refs, the scope's attributes), where the reference checks UTF-8 (both found by
    tests/portal/usage/test_otlp_scan.py's fuzz). Any such export is the reference's: about 0.45 µs a record."""
    return len(UnknownFieldSet(message))


_SOURCE_KEYS = frozenset(events.SOURCE_ATTRIBUTES)


class _NotSure(Exception):
    """The lean reading leaves this export to the reference one."""


def _exact(value: str | None) -> str:
    """The text of an encoded AnyValue that holds a short ASCII string without NUL; '' when absent or unset."""
    if value is None or value == "":  # no attribute, or an AnyValue with no value set: the reference's None
        return ""
    if value[0] != "\n" or not value.isascii() or ord(value[1]) != len(value) - 2 or "\x00" in value[2:]:
        raise _NotSure
    return value[2:]


def _text(value: str | None) -> str:
    """The same, with Envoy's '-' (an unset access-log value) as ''."""
    text = _exact(value)
    return "" if text == "-" else text


def _source(attributes: dict[str, str], resource: dict[str, str]) -> str:
    """The first of SOURCE_ATTRIBUTES set on the record or else its resource, as the reference picks it."""
    for key in events.SOURCE_ATTRIBUTES:
        text = _exact(attributes.get(key)) or _exact(resource.get(key))
        if text and text != "-":
            return text
        if text:
            break  # '-' is chosen by the reference and then refused: its to report
    raise _NotSure


# The attributes read as text and as counts, in the order _record unpacks them.
_TEXT_KEYS = ("credential_id", "route", *events.MODEL_FIELDS)
_COUNT_KEYS = (
    "status_code",
    "duration_ms",
    "time_to_first_token_ms",
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "reasoning_tokens",
)
_MISSING = object()
_TEXT_MISSING = (_MISSING,) * len(_TEXT_KEYS)
_COUNT_ABSENT = ("",) * len(_COUNT_KEYS)
_ONE_COUNT = "|\n\x00|\n\x01-|" + "|".join(f"\n{chr(digits)}[0-9]{{{digits}}}" for digits in range(1, 10))
_COUNT_DIGITS = str.maketrans(dict.fromkeys([*map(chr, range(0x20)), "-"]))  # what is left: the digits, or ""
_COUNTS = re.compile(f"(?:{_ONE_COUNT})(?:,(?:{_ONE_COUNT})){{{len(_COUNT_KEYS) - 1}}}")
_UNSET = ("", "\n\x00")  # no value, or an empty string: the reference's falsy values


class _Memo:
    """Texts already read in this export, by their encoding: an export repeats its routes, models and
    credentials many times, and a dictionary hit is far cheaper than reading the value again."""

    def __init__(self) -> None:
        self.texts: dict[str | None, str] = {None: "", "": ""}

    def text(self, value: str | None) -> str:
        text = self.texts[value] = _text(value)
        return text


def _record(
    index: int,
    record: Any,
    resource: dict[str, str],
    resource_source: str | None,
    earliest: datetime,
    latest: datetime,
    memo: _Memo,
) -> UsageRecord:
    if record.body:
        _exact(record.body)  # a string body (Envoy's text format) is not read; anything else is the reference's
    attributes = record.attributes
    get = attributes.get
    if "usage" in attributes or "subject" in attributes:
        raise _NotSure
    if resource_source is None or "aigw.source" in attributes or "source" in attributes or "event.source" in attributes:
        source = _source(dict(attributes), resource)
    else:
        source = resource_source
    event_type = get("event.type")
    if event_type is not None and _exact(event_type) not in ("", events.EVENT_TYPE):
        raise _NotSure
    # Reading and looking up are done by map() in C: no Python frame per attribute.
    read: list[Any] = list(map(memo.texts.get, map(get, _TEXT_KEYS), _TEXT_MISSING))
    if _MISSING in read:
        read = [memo.text(get(key)) if text is _MISSING else text for key, text in zip(_TEXT_KEYS, read, strict=True)]
    client_id, route, *names = read
    # The counts are mostly distinct (token counts), so they are checked together: one regular expression over
    # the eight encoded values joined (each absent, unset, '-' or up to nine digits with the matching length byte),
    # then read as integers. Ten digits and more (past 2^31 perhaps) are the reference's.
    joined = ",".join(map(get, _COUNT_KEYS, _COUNT_ABSENT))
    if _COUNTS.fullmatch(joined) is None:
        raise _NotSure
    numbers = [int(digits) if digits else None for digits in joined.translate(_COUNT_DIGITS).split(",")]
    status_code, duration_ms, ttft_ms, input_tokens, cached, cache_write, output_tokens, reasoning = numbers
    event_id = _text(get("event.id"))  # ids are unique: not worth remembering
    request_id = _text(get("request_id"))
    if not event_id:
        if not request_id:
            raise _NotSure
        event_id = events.derive_event_id(source, request_id)
    time = _exact(get("start_time"))
    if not time:
        time = events.unix_nanos(record.time_unix_nano) or events.unix_nanos(record.observed_time_unix_nano) or ""
    try:
        event_time = events.parse_time(time, "attributes.start_time")
    except events.EventProblem:
        raise _NotSure from None
    if not earliest <= event_time <= latest:
        raise _NotSure
    if status_code is not None and status_code > 999:
        raise _NotSure
    provider = get("provider")
    return UsageRecord(  # by position, in UsageRecord's field order (keywords cost about 1 µs more a record)
        index,
        event_id,
        source,
        event_time,
        client_id,
        _models(tuple(names)),
        memo.text(provider if provider not in _UNSET and provider is not None else get("backend")),
        route,
        status_code,
        duration_ms,
        ttft_ms,
        input_tokens,
        cached,
        cache_write,
        output_tokens,
        reasoning,
    )


# --- the columnar reading: a scope's records read attribute by attribute -------------------------------------------
# The row-wise reading above costs about 20 µs a record in Python frames and small steps. A gateway's export is
# uniform (every record carries the same attributes; routes, models and credentials repeat), so the common case is
# read a column at a time: each attribute of every record fetched by map() in C, each distinct text checked once,
# each count column checked by one regular expression and converted by int() in C, and the records built by
# tuple.__new__ over zip() (no Python frame per record). What stays per record is what is unique to it: its request
# id (checked), its derived event id (a SHA-1) and its time. Anything not uniform (a source on the record, an
# absent start_time, an event.id on some records only) is left to the row-wise reading, which is exactly as sure.

_BODY = attrgetter("body")
_ATTRIBUTES = attrgetter("attributes")
_HAS = {key: methodcaller("__contains__", key) for key in ("usage", "subject", *events.SOURCE_ATTRIBUTES)}
_COUNT_COLUMN = re.compile(f"(?:{_ONE_COUNT})(?:,(?:{_ONE_COUNT}))*")
_NEW = tuple.__new__


def _column(attributes: list[Any], key: str) -> list[Any]:
    return list(map(methodcaller("get", key), attributes))


def _texts(values: list[Any], memo: _Memo) -> list[str]:
    """The texts of one attribute of every record: each distinct encoding read once (_text's rules)."""
    texts = memo.texts
    for value in set(values).difference(texts):
        memo.text(value)
    return list(map(texts.__getitem__, values))


def _counts(values: list[Any]) -> list[int | None]:
    """A count attribute of every record: absent, unset, '-' or up to nine digits (the row-wise rule), as integers."""
    joined = ",".join(values if None not in values else ["" if value is None else value for value in values])
    if _COUNT_COLUMN.fullmatch(joined) is None:
        raise _NotSure
    digits = joined.translate(_COUNT_DIGITS).split(",")
    if len(digits) != len(values):  # a value holding ',' cannot pass the expression, but counts must line up
        raise _NotSure
    if "" in digits:
        return [int(text) if text else None for text in digits]
    return list(map(int, digits))


# Every attribute the reading takes, in _TEXT_KEYS, _COUNT_KEYS order, then the rest.
_READ_KEYS = (*_TEXT_KEYS, *_COUNT_KEYS, "request_id", "start_time", "provider", "backend")
# Attributes whose mere presence sends a record elsewhere, or which only the row-wise reading takes.
_PROBED_KEYS = ("usage", "subject", *events.SOURCE_ATTRIBUTES, "event.type", "event.id")


def _only_read_keys(attributes: list[Any], columns: list[list[Any]]) -> bool:
    """True when no record can hold an attribute beyond _READ_KEYS: every column is present on every record or on
    none, and every record has as many attributes as the columns present everywhere (a map has each key once)."""
    present = 0
    for values in columns:
        if None not in values:
            present += 1
        elif any(value is not None for value in values):
            return False
    return set(map(len, attributes)) <= {present}


def _uniform_columns(attributes: list[Any]) -> list[Any] | None:
    """_READ_KEYS' columns when every record holds exactly the attributes of _READ_KEYS that the first one holds (the
    gateway's export: the same access-log fields on every record), fetched a record at a time by one itemgetter
    each (about 0.6 µs a record less than a column at a time, the maps being visited once); None otherwise."""
    if not attributes:
        return None
    present = [key for key in _READ_KEYS if key in attributes[0]]
    if not present or set(map(len, attributes)) != {len(present)}:
        return None
    try:
        rows = list(map(itemgetter(*present), attributes))
    except KeyError:
        return None  # a record without one of them (and so with another attribute instead)
    fetched = dict(zip(present, zip(*rows, strict=True) if len(present) > 1 else [rows], strict=True))
    absent = [None] * len(attributes)
    return [list(fetched[key]) if key in fetched else absent for key in _READ_KEYS]


def _models(names: tuple[str, ...]) -> tuple[str, ...]:
    models: list[str] = []
    for model in names:
        if model and model not in models:
            models.append(model)
    return tuple(models)


def _columns(
    first_index: int,
    records: Any,
    resource_source: str | None,
    earliest: datetime,
    latest: datetime,
    memo: _Memo,
) -> ReadRecords:
    """The records of one scope, read a column at a time; _NotSure leaves them to the row-wise reading."""
    if resource_source is None:
        raise _NotSure
    attributes = list(map(_ATTRIBUTES, records))
    columns = _uniform_columns(attributes)  # when it answers, no record holds any other attribute
    if columns is None:
        columns = [_column(attributes, key) for key in _READ_KEYS]
        if not _only_read_keys(attributes, columns):
            if any(any(map(_HAS[key], attributes)) for key in _PROBED_KEYS[:-2]):
                raise _NotSure  # a usage or subject attribute, or a source on the record: the row-wise reading's
            for event_type in set(_column(attributes, "event.type")):
                if event_type is not None and _exact(event_type) not in ("", events.EVENT_TYPE):
                    raise _NotSure
            if set(_column(attributes, "event.id")) != {None}:
                raise _NotSure  # ids sent by the gateway: the row-wise reading takes them record by record
    for body in set(map(_BODY, records)):
        if body:
            _exact(body)
    client_ids, routes, *names = (_texts(values, memo) for values in columns[: len(_TEXT_KEYS)])
    statuses, durations, ttfts, inputs, cached, writes, outputs, reasoning = (
        _counts(values) for values in columns[len(_TEXT_KEYS) : len(_TEXT_KEYS) + len(_COUNT_KEYS)]
    )
    request_column, start_column, provider_column, backend_column = columns[len(_TEXT_KEYS) + len(_COUNT_KEYS) :]
    if max(filter(None, statuses), default=0) > 999:
        raise _NotSure
    request_ids = list(map(_text, request_column))
    if "" in request_ids:
        raise _NotSure
    event_ids = events.derive_event_ids(resource_source, request_ids)
    starts = list(map(_exact, start_column))
    if "" in starts:
        raise _NotSure  # the time comes from the record's own timestamps: the row-wise reading's
    times = events.utc_times(starts, earliest, latest)
    if times is None:
        raise _NotSure
    providers = list(zip(provider_column, backend_column, strict=True))
    distinct_providers = {
        pair: memo.text(pair[0] if pair[0] not in _UNSET and pair[0] is not None else pair[1])
        for pair in set(providers)
    }
    counts = [statuses, durations, ttfts, inputs, cached, writes, outputs, reasoning]
    return _records(first_index, event_ids, resource_source, times, client_ids, names, providers, distinct_providers,
                    routes, counts)  # fmt: skip


def _records(
    first_index: int,
    event_ids: list[str],
    source: str,
    times: list[datetime],
    client_ids: list[str],
    names: list[list[str]],
    providers: list[tuple[Any, Any]],
    distinct_providers: dict[tuple[Any, Any], str],
    routes: list[str],
    counts: list[list[int | None]],
) -> ReadRecords:
    """The records of one scope from its columns, with the columns kept for rating (contracts.ReadRecords): the
    model names of each record deduped (_models, once per distinct list), its provider else its backend."""
    model_names = list(zip(*names, strict=True))
    distinct_models = {key: _models(key) for key in set(model_names)}
    kept: list[Sequence[Any]] = [
        range(first_index, first_index + len(event_ids)),
        event_ids,
        [source] * len(event_ids),
        times,
        client_ids,
        list(map(distinct_models.__getitem__, model_names)),
        list(map(distinct_providers.__getitem__, providers)),
        routes,
        *counts,
    ]
    return ReadRecords(map(_NEW, repeat(UsageRecord), zip(*kept, strict=True)), kept)


# --- the native reading: the export scanned in C (portal/usage/_otlp_scan.c) ----------------------------------------
# The upb reading above still spends about 14 µs a record on this machine, most of it parsing, fetching the
# attributes and checking their encodings in Python. The scan walks the export's wire format in C and hands over
# each scope's attributes as columns of texts and integers (counts checked and converted, repeated texts built once);
# the same column-wise rules as _columns then build the records. The scan answers None for anything outside its
# sure subset (listed in _otlp_scan.c), and any doubt here sends the whole export to the upb reading, which is
# exactly as sure: so all three readings give the same answer (tests/portal/usage/test_otlp_scan.py).

# The attributes the scan reads, in _READ_KEYS order, then event.type (checked, not kept): a record holding any
# other attribute (a source, an event.id, usage, subject) is left to the upb reading by the scan itself.
_SCAN_KEYS = (*_READ_KEYS, "event.type")
# The shortest bound the reference puts on a text read here (credential_id, events._fast_log_record): every text the
# scan returns is within every bound, so no length is checked again. Source (from the resource) is checked below.
_SCAN_MAX_LENGTH = 200
# Envoy's '-' (an unset access-log value) and an absent attribute both read as ''.
_DASH_OR_ABSENT = {"-": "", None: ""}
_EVENT_TYPES = {None, "", events.EVENT_TYPE}


def _scanned_source(resource: dict[str, str | None]) -> str:
    """_source of a record without a source of its own, from the scan's resource attributes (None: not a string)."""
    for key in events.SOURCE_ATTRIBUTES:
        text = resource.get(key, "")
        if text is None or text == "-" or len(text) > events.MAX_TEXT:
            raise _NotSure  # chosen by the reference (or skipped, when falsy), then read or refused: its to say
        if text:
            return text
    raise _NotSure


def _scanned_texts(values: list[str | None]) -> list[str]:
    """A text column as _text reads it: '-' and absent as ''. map() in C; the values are already checked."""
    return list(map(_DASH_OR_ABSENT.get, values, values))  # type: ignore[arg-type]


def _scanned_columns(
    first_index: int, columns: list[list[Any]], source: str, earliest: datetime, latest: datetime
) -> ReadRecords:
    """The records of one scanned scope by _columns' rules; _NotSure leaves the export to the upb reading."""
    text_count, count_count = len(_TEXT_KEYS), len(_COUNT_KEYS)
    *read, request_column, start_column, provider_column, backend_column, event_types = columns
    if not _EVENT_TYPES.issuperset(event_types):
        raise _NotSure
    client_ids, routes, *names = map(_scanned_texts, read[:text_count])
    statuses, durations, ttfts, inputs, cached, writes, outputs, reasoning = read[text_count : text_count + count_count]
    if max(filter(None, statuses), default=0) > 999:
        raise _NotSure
    request_ids = _scanned_texts(request_column)
    if "" in request_ids:
        raise _NotSure
    event_ids = events.derive_event_ids(source, request_ids)
    if None in start_column or "" in start_column:
        raise _NotSure  # the time comes from the record's own timestamps: the upb reading's
    times = events.utc_times(start_column, earliest, latest)
    if times is None:
        raise _NotSure
    providers = list(zip(provider_column, backend_column, strict=True))
    distinct_providers = {
        pair: _DASH_OR_ABSENT.get(chosen, chosen)  # type: ignore[call-overload]
        for pair in set(providers)
        for chosen in (pair[0] or pair[1],)  # '' (or nothing set) and absent fall to the backend, '-' does not
    }
    counts = [statuses, durations, ttfts, inputs, cached, writes, outputs, reasoning]
    return _records(first_index, event_ids, source, times, client_ids, names, providers, distinct_providers, routes,
                    counts)  # fmt: skip


def _native(body: bytes, *, now: datetime, max_age: timedelta, max_skew: timedelta, max_events: int) -> list[Any]:
    if _native_scan is None:
        raise _NotSure
    scanned = _native_scan(body, _SCAN_KEYS, _COUNT_KEYS, _SCAN_MAX_LENGTH)
    if scanned is None:
        raise _NotSure
    earliest, latest = now - max_age, now + max_skew
    results: list[UsageRecord | EventRejection] = []
    for resource, scopes in scanned:
        for records, columns in scopes:
            if not records:
                continue  # nothing to read, whatever the resource (as _lean: no record, no source needed)
            if len(results) + records > max_events:
                raise _NotSure
            read = _scanned_columns(len(results), columns, _scanned_source(resource), earliest, latest)
            if results:
                results.extend(read)  # several scopes: a ReadRecords drops its columns when extended
            else:
                results = read  # one scope (the collector's export): its columns go on to rating
    return results


def _lean(body: bytes, *, now: datetime, max_age: timedelta, max_skew: timedelta, max_events: int) -> list[Any]:
    try:
        export = _LEAN_EXPORT.FromString(body)
    except (DecodeError, RuntimeWarning, ValueError):
        raise _NotSure from None
    earliest, latest = now - max_age, now + max_skew
    results: list[UsageRecord | EventRejection] = []
    memo = _Memo()
    for resource_log in export.resource_logs:
        if _unknown_fields(resource_log.resource):
            raise _NotSure
        resource = dict(resource_log.resource.attributes)
        try:
            resource_source: str | None = _source({}, resource)
        except _NotSure:
            resource_source = None
        for scope_log in resource_log.scope_logs:
            records = scope_log.log_records
            if len(results) + len(records) > max_events:
                raise _NotSure
            if _unknown_fields(scope_log.scope) or any(map(_unknown_fields, records)):
                raise _NotSure
            index = len(results)
            try:
                results.extend(_columns(index, records, resource_source, earliest, latest, memo))
            except _NotSure:
                results.extend(
                    _record(index + offset, record, resource, resource_source, earliest, latest, memo)
                    for offset, record in enumerate(records)
                )
    return results


def read_otlp_protobuf(
    body: bytes,
    *,
    now: datetime,
    max_age: timedelta,
    max_skew: timedelta,
    max_events: int,
    native: bool = True,
) -> list[UsageRecord | EventRejection]:
    """An ExportLogsServiceRequest body as records and rejections: the native scan when it is built, asked for and
    sure, else the lean reading when it is sure, else the reference reading over the generated classes (which raises
    PayloadError for a body that is not one). native=False is the reading without the scan (the tests compare)."""
    if native:
        try:
            return _native(body, now=now, max_age=max_age, max_skew=max_skew, max_events=max_events)
        except _NotSure:
            pass
    try:
        return _lean(body, now=now, max_age=max_age, max_skew=max_skew, max_events=max_events)
    except (_NotSure, UnicodeError, RecursionError):
        pass
    try:
        message = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RuntimeWarning, ValueError):
        raise events.PayloadError("The body is not an OTLP ExportLogsServiceRequest", code="malformed_otlp") from None
    return events.parse_otlp_protobuf(message, now=now, max_age=max_age, max_skew=max_skew, max_events=max_events)
