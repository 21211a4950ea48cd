"""Reading usage events off the wire: CloudEvents batches and OTLP log records become UsageRecords or
rejections with a reason and the offending field. Pure: no database, no Django."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter
from typing import Any

import msgspec

from portal.usage.contracts import EventRejection, ReadRecords, UsageRecord

try:  # built by `make install` and the image (k8s/image/steps.sh extensions); the Python twins stand in without it
    from portal.usage import _native
except ImportError:  # pragma: no cover - tests/portal/usage/test_native.py requires it where it is built
    _native = None  # type: ignore[assignment]
try:  # the same build; without it CloudEvents batches take the msgspec reading (test_cloudevents_scan.py requires it)
    from portal.usage._cloudevents_scan import scan as _scan
except ImportError:  # pragma: no cover
    _scan = None  # type: ignore[assignment]

EVENT_TYPE = "ai.gateway.llm.usage.v1"
ACCEPTED_EVENT_TYPES = frozenset({EVENT_TYPE})
# UUIDv5 namespace of event ids the portal derives from the gateway source and its x-request-id.
EVENT_ID_NAMESPACE = uuid.UUID("8f1c2d4e-5a6b-5c7d-9e0f-112233445566")
MAX_TOKENS = 2**31 - 1  # stored as integers: no single request comes near two billion tokens
MAX_TEXT = 255

# data.usage field -> stored column
TOKEN_FIELDS = {
    "input_tokens": "input_tokens",
    "cached_input_tokens": "cached_input_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
    "output_tokens": "output_tokens",
    "reasoning_tokens": "reasoning_tokens",
}
MODEL_FIELDS = ("model_override", "model_requested", "model_response", "model")
_ABSENT = ("", "-", None)


class PayloadError(Exception):
    """The body as a whole cannot be read (not an event-level problem)."""

    def __init__(self, message: str, *, code: str = "malformed_body", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class EventProblem(Exception):
    def __init__(self, reason: str, field_name: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field_name
        self.message = message


def decode_body(body: bytes, *, content_encoding: str, max_bytes: int) -> bytes:
    """The request body, gunzipped when it says so, refused past `max_bytes` once decompressed."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_bytes:
            raise PayloadError(f"The body is larger than {max_bytes} bytes", code="payload_too_large", status=413)
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise PayloadError(
            f"Content-Encoding '{content_encoding}' is not supported (gzip is)", code="unsupported_encoding", status=415
        )
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, max_bytes + 1)
        if len(data) > max_bytes or decompressor.unconsumed_tail:
            raise PayloadError(
                f"The body is larger than {max_bytes} bytes once decompressed", code="payload_too_large", status=413
            )
        data += decompressor.flush()
    except zlib.error:
        raise PayloadError("The body is not valid gzip", code="malformed_gzip") from None
    if not decompressor.eof:
        raise PayloadError("The gzip stream is truncated", code="malformed_gzip")
    if len(data) > max_bytes:
        raise PayloadError(
            f"The body is larger than {max_bytes} bytes once decompressed", code="payload_too_large", status=413
        )
    return data


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=5)


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("The body is not valid JSON", code="malformed_json") from None
    except RecursionError:
        raise PayloadError("The body nests too deeply", code="malformed_json") from None


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


# RFC 9562 5.5: a UUIDv5 is the SHA-1 of namespace and name with version 5 in the 13th hex digit and the variant
# bits 10 in the top of the 17th; the text is cut from the digest's hex, with no UUID object or integer built.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


def derive_event_id(source: str, request_id: str) -> str:
    """str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source}|{request_id}")), without building UUID objects: every
    access-log record derives its id (tests/portal/usage/test_events_fast.py compares it with uuid.uuid5)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"{source}|{request_id}".encode()).hexdigest()  # noqa: S324
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT_DIGIT[digest[16]]}{digest[17:20]}-{digest[20:32]}"


def derive_event_ids(source: str, request_ids: list[str]) -> list[str]:
    """derive_event_id of each request id of one source: by the C extension where it is built (about 0.2 µs an id
    where derive_event_id is about 2; tests/portal/usage/test_native.py holds the two equal)."""
    if _native is not None:
        return _native.event_ids(_NAMESPACE_BYTES + f"{source}|".encode(), request_ids)
    return list(map(derive_event_id, repeat(source), request_ids))


def parse_time(value: object, field_name: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise EventProblem("invalid_time", field_name, "must be an RFC 3339 date-time with a time zone")
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise EventProblem("invalid_time", field_name, "must carry a time zone (e.g. Z)")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise EventProblem("invalid_time", field_name, "must be an RFC 3339 date-time with a time zone") from None


def parse_count(value: object, field_name: str) -> int | None:
    """A token count: a non-negative integer, a decimal string of one (access logs), or absent/null/'-'."""
    if value in _ABSENT:
        return None
    if isinstance(value, bool):
        raise EventProblem("invalid_number", field_name, "must be a non-negative integer or null")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise EventProblem("invalid_number", field_name, "must be a non-negative integer or null")
    if number < 0:
        raise EventProblem("invalid_number", field_name, "must be a non-negative integer or null")
    if number > MAX_TOKENS:
        raise EventProblem("invalid_number", field_name, f"must be at most {MAX_TOKENS}")
    return number


def _text(value: object, field_name: str, *, required: bool = False, max_length: int = MAX_TEXT) -> str:
    if value in _ABSENT:
        if required:
            raise EventProblem("missing_field", field_name, "is required")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise EventProblem("invalid_field", field_name, "must be a string")
    text = str(value)
    if "\x00" in text:
        raise EventProblem("invalid_field", field_name, "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventProblem("invalid_field", field_name, "must be valid Unicode text") from None
    if len(text) > max_length:
        raise EventProblem("invalid_field", field_name, f"must be at most {max_length} characters")
    return text


def record_from_fields(
    *,
    index: int,
    event_id: object,
    source: object,
    time: object,
    data: Mapping[str, Any],
    subject: object = None,
    time_field: str = "time",
    prefix: str = "data.",
    now: datetime,
    max_age: timedelta,
    max_skew: timedelta,
) -> UsageRecord:
    """Validate one event's fields (shared by CloudEvents and OTLP); raises EventProblem."""
    source_text = _text(source, "source", required=True)
    request_id = _text(data.get("request_id"), prefix + "request_id")
    event_id_text = _text(event_id, "id", max_length=200)
    if not event_id_text:
        if not request_id:
            raise EventProblem("missing_id", "id", "is required when data.request_id (x-request-id) is absent")
        event_id_text = derive_event_id(source_text, request_id)
    event_time = parse_time(time, time_field)
    if event_time < now - max_age:
        raise EventProblem("too_late", time_field, f"is older than the {max_age.days}-day lateness window")
    if event_time > now + max_skew:
        raise EventProblem("in_future", time_field, "is in the future")
    client_id = _text(data.get("credential_id"), prefix + "credential_id", max_length=200) or _text(
        subject, "subject", max_length=200
    )
    models = []
    for name in MODEL_FIELDS:
        model = _text(data.get(name), prefix + name)
        if model and model not in models:
            models.append(model)
    usage = data.get("usage")
    if usage is None:
        usage = {key: data.get(key) for key in TOKEN_FIELDS}
        usage_prefix = prefix
    elif isinstance(usage, Mapping):
        usage_prefix = prefix + "usage."
    else:
        raise EventProblem("invalid_field", prefix + "usage", "must be an object")
    tokens = {column: parse_count(usage.get(key), usage_prefix + key) for key, column in TOKEN_FIELDS.items()}
    status_code = parse_count(data.get("status_code"), prefix + "status_code")
    if status_code is not None and status_code > 999:
        raise EventProblem("invalid_number", prefix + "status_code", "must be an HTTP status code")
    # The rest of the data document is not kept (see portal.usage.store for what a stored event keeps and why).
    return UsageRecord(
        index=index,
        event_id=event_id_text,
        source=source_text,
        event_time=event_time,
        client_id=client_id,
        model_names=tuple(models),
        provider=_text(data.get("provider") or data.get("backend"), prefix + "provider"),
        route=_text(data.get("route"), prefix + "route", max_length=500),
        status_code=status_code,
        duration_ms=parse_count(data.get("duration_ms"), prefix + "duration_ms"),
        time_to_first_token_ms=parse_count(data.get("time_to_first_token_ms"), prefix + "time_to_first_token_ms"),
        **tokens,
    )


# --- CloudEvents, the fast way -------------------------------------------------------------------------------
# A well-formed batch (the common case) is decoded straight into typed structs (msgspec, in C) and checked with the
# same rules as record_from_fields, on values whose types are already known. Anything the fast reading is not sure
# of (a wrong type, a value out of bounds, a malformed event) sends the whole batch to the reference reading above,
# which reports each event's problem; so both readings give the same answer for every batch. Before both, where it is
# built, the C scan (portal/usage/_cloudevents_scan.c) parses the body straight into the columnar reading's columns
# (read_cloudevents then costs about 2.4 µs of CPU an event where it cost about 5.8, on a 5,000-event batch shaped
# like tests/bench/test_usage_ingest.py's); whatever it is not sure of goes to the typed decode, whole
# (tests/portal/usage/test_cloudevents_scan.py compares the two, on a differential fuzz too).


# Not tracked by the garbage collector (msgspec's gc=False): they hold only text, numbers and each other, never a
# cycle, and a batch decodes thousands of them, each of which would otherwise count towards the next collection.
class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None


class _Data(_Usage):
    request_id: str | None = None
    credential_id: str | None = None
    model_override: str | None = None
    model_requested: str | None = None
    model_response: str | None = None
    model: str | None = None
    usage: _Usage | None = None
    status_code: int | None = None
    duration_ms: int | None = None
    time_to_first_token_ms: int | None = None
    route: str | None = None
    backend: str | None = None
    provider: str | None = None


class _CloudEvent(msgspec.Struct, gc=False):
    specversion: str
    type: str
    source: str
    time: str
    data: _Data
    id: str | None = None
    subject: str | None = None


_BATCH_DECODER = msgspec.json.Decoder(list[_CloudEvent])


class _NotSure(Exception):
    """The fast reading leaves this batch to the reference one."""


def _sure_text(text: str) -> None:
    """Raises _NotSure for text holding NUL or not encodable as UTF-8 (a lone surrogate): the reference's to read."""
    if "\x00" in text:
        raise _NotSure
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotSure from None


def _plain(value: str | None, max_length: int = MAX_TEXT) -> str:
    if value is None or value == "" or value == "-":
        return ""
    if len(value) > max_length:
        raise _NotSure
    _sure_text(value)
    return value


def _bounded(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_TOKENS:
        raise _NotSure
    return value


def _fast_record(index: int, event: _CloudEvent, earliest: datetime, latest: datetime) -> UsageRecord:
    if event.specversion != "1.0" or event.type not in ACCEPTED_EVENT_TYPES:
        raise _NotSure
    data = event.data
    source = _plain(event.source)
    event_id = _plain(event.id, 200)
    if not source:
        raise _NotSure
    if not event_id:
        request_id = _plain(data.request_id)
        if not request_id:
            raise _NotSure
        event_id = derive_event_id(source, request_id)
    elif data.request_id is not None:
        _plain(data.request_id)
    try:
        event_time = parse_time(event.time, "time")
    except EventProblem:
        raise _NotSure from None
    if not earliest <= event_time <= latest:
        raise _NotSure
    client_id = _plain(data.credential_id, 200) or _plain(event.subject, 200)
    models: list[str] = []
    for name in (data.model_override, data.model_requested, data.model_response, data.model):
        model = _plain(name)
        if model and model not in models:
            models.append(model)
    usage = data.usage if data.usage is not None else data
    status_code = data.status_code
    if status_code is not None and not 0 <= status_code <= 999:
        raise _NotSure
    return UsageRecord(  # by position, in UsageRecord's field order (keywords cost about 1 µs more an event)
        index,
        event_id,
        source,
        event_time,
        client_id,
        tuple(models),
        _plain(data.provider or data.backend),
        _plain(data.route, 500),
        status_code,
        _bounded(data.duration_ms),
        _bounded(data.time_to_first_token_ms),
        _bounded(usage.input_tokens),
        _bounded(usage.cached_input_tokens),
        _bounded(usage.cache_creation_input_tokens),
        _bounded(usage.output_tokens),
        _bounded(usage.reasoning_tokens),
    )


# The columnar reading of a decoded batch: each field of every event taken by map() in C, each distinct text checked
# once, counts bounded by min and max, times parsed by map(datetime.fromisoformat) and the records built by
# tuple.__new__ over zip(): no Python frame per event but the checks of its own id (and a derived id's SHA-1).
# Anything it is not sure of leaves the batch to the per-event fast reading above, which is exactly as sure.
_DATA = attrgetter("data")
_TZINFO = attrgetter("tzinfo")
_NEW = tuple.__new__


def _field(items: list[Any], name: str) -> list[Any]:
    return list(map(attrgetter(name), items))


def _all_plain(values: list[str], max_length: int) -> None:
    """_plain's checks of texts that are all set and distinct (ids), done over the column at once in C: each is
    kept as it is when none is longer than max_length, none holds NUL and all of them encode as UTF-8. Raises
    _NotSure when any would make _plain raise. About 0.1 µs an event where _plain's call is about 0.8."""
    if values and max(map(len, values)) > max_length:
        raise _NotSure
    _sure_text("".join(values))


def _distinct_plain(values: list[str | None], max_length: int = MAX_TEXT) -> list[str]:
    texts = {value: _plain(value, max_length) for value in set(values)}
    return list(map(texts.__getitem__, values))


def _bounded_column(values: list[int | None], top: int = MAX_TOKENS) -> list[int | None]:
    numbers: list[int] = [value for value in values if value is not None]
    if numbers and not (min(numbers) >= 0 and max(numbers) <= top):
        raise _NotSure
    return values


def _model_names(names: tuple[str | None, ...]) -> tuple[str, ...]:
    models: list[str] = []
    for name in names:
        model = _plain(name)
        if model and model not in models:
            models.append(model)
    return tuple(models)


def utc_times(texts: list[str], earliest: datetime, latest: datetime) -> list[datetime] | None:
    """parse_time of every text, in UTC, when each is a date-time with a zone inside [earliest, latest]; None when
    any is not (the caller's per-event reading then tells which, and why)."""
    try:
        times = list(map(datetime.fromisoformat, texts))
    except (TypeError, ValueError):
        return None
    zones = set(map(_TZINFO, times))
    if None in zones:
        return None
    if zones != {UTC}:
        try:
            times = [moment.astimezone(UTC) for moment in times]
        except OverflowError:
            return None
    if times and not (earliest <= min(times) and max(times) <= latest):
        return None
    return times


# The columns of the columnar reading, in this order: the event's fields, data's, then the token counts of data.usage
# when it is set, else of data itself (as _fast_record reads them). The C scan returns the same columns
# (_cloudevents_scan.COLUMNS, held equal by tests/portal/usage/test_cloudevents_scan.py).
_EVENT_COLUMNS = ("specversion", "type", "source", "id", "time", "subject")
_DATA_COLUMNS = (
    "request_id",
    "credential_id",
    *MODEL_FIELDS,
    "provider",
    "backend",
    "route",
    "status_code",
    "duration_ms",
    "time_to_first_token_ms",
)
_SCAN_COLUMNS = (*_EVENT_COLUMNS, *_DATA_COLUMNS, *TOKEN_FIELDS)


def _columnar_records(batch: list[_CloudEvent], earliest: datetime, latest: datetime) -> ReadRecords:
    if not set(_field(batch, "specversion")) <= {"1.0"} or not set(_field(batch, "type")) <= ACCEPTED_EVENT_TYPES:
        raise _NotSure  # checked again by _records_of_columns; here before the columns are taken, as it is cheap
    data = list(map(_DATA, batch))
    usages = [item.usage if item.usage is not None else item for item in data]
    columns = [
        *(_field(batch, name) for name in _EVENT_COLUMNS),
        *(_field(data, name) for name in _DATA_COLUMNS),
        *(_field(usages, name) for name in TOKEN_FIELDS),
    ]
    return _records_of_columns(columns, earliest, latest)


def _records_of_columns(
    columns: list[list[Any]], earliest: datetime, latest: datetime, *, scanned: bool = False
) -> ReadRecords:
    """The records of a batch given as _SCAN_COLUMNS (from the decoded structs, or from the C scan) by the columnar
    rules; _NotSure leaves the batch to the per-event reading. scanned: the values are the C scan's, whose texts are
    printable ASCII within _plain's bounds and whose counts are 0 to 999,999,999 (within MAX_TOKENS), so the checks
    that could only pass on them are skipped (about 0.5 µs an event)."""
    (
        specversions,
        event_types,
        raw_sources,
        raw_ids,
        raw_times,
        subjects,
        request_ids,
        credential_ids,
        *model_columns,  # MODEL_FIELDS' four
        provider_column,
        backend_column,
        route_column,
        status_column,
        durations,
        ttfts,
        input_tokens,
        cached_input_tokens,
        cache_write_tokens,
        output_tokens,
        reasoning_tokens,
    ) = columns
    if not set(specversions) <= {"1.0"} or not set(event_types) <= ACCEPTED_EVENT_TYPES:
        raise _NotSure
    sources = _distinct_plain(raw_sources)
    if "" in sources:
        raise _NotSure
    if None in raw_ids or "" in raw_ids or "-" in raw_ids:
        raise _NotSure  # events without an id of their own: the per-event reading derives theirs
    event_ids: list[str] = raw_ids
    if not scanned:
        _all_plain(raw_ids, 200)  # what _plain(id, 200) of each would check; none is '', '-' or None
        if set(request_ids) != {None}:
            _all_plain(list(filter(None, request_ids)), MAX_TEXT)  # checked, as the per-event reading checks them
    times = utc_times(raw_times, earliest, latest)
    if times is None:
        raise _NotSure
    client_pairs = list(zip(credential_ids, subjects, strict=True))
    clients = {pair: _plain(pair[0], 200) or _plain(pair[1], 200) for pair in set(client_pairs)}
    model_keys = list(zip(*model_columns, strict=True))
    models = {key: _model_names(key) for key in set(model_keys)}
    provider_pairs = list(zip(provider_column, backend_column, strict=True))
    providers = {pair: _plain(pair[0] or pair[1]) for pair in set(provider_pairs)}
    statuses = _bounded_column(status_column, 999)
    counts = [durations, ttfts, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens]
    if not scanned:
        counts = list(map(_bounded_column, counts))
    kept: list[Sequence[Any]] = [
        range(len(raw_ids)),
        event_ids,
        sources,
        times,
        list(map(clients.__getitem__, client_pairs)),
        list(map(models.__getitem__, model_keys)),
        list(map(providers.__getitem__, provider_pairs)),
        _distinct_plain(route_column, 500),
        statuses,
        *counts,
    ]
    return ReadRecords(map(_NEW, repeat(UsageRecord), zip(*kept, strict=True)), kept)


def read_cloudevents(
    body: bytes,
    *,
    now: datetime,
    max_age: timedelta,
    max_skew: timedelta,
    max_events: int,
    native: bool = True,
) -> list[UsageRecord | EventRejection]:
    """A CloudEvents JSON body as records and rejections: the C scan's columns when it is built, asked for and sure,
    else the typed decode's, else the per-event fast reading, else the reference. native=False is the reading
    without the scan (the tests compare)."""
    earliest, latest = now - max_age, now + max_skew
    if native and _scan is not None:
        # The scan reads what msgspec would decode to the same values (or answers None), so the columnar rules give
        # the decoded batch's answer; when they are not sure, so would they be of the decoded batch.
        columns = _scan(body, max_events)
        if columns is not None:
            try:
                return _records_of_columns(columns, earliest, latest, scanned=True)
            except _NotSure:
                pass
    try:
        batch = _BATCH_DECODER.decode(body)
        if len(batch) <= max_events:
            try:
                return _columnar_records(batch, earliest, latest)
            except _NotSure:
                return [_fast_record(index, event, earliest, latest) for index, event in enumerate(batch)]
    except (msgspec.DecodeError, _NotSure, RecursionError):
        pass
    return parse_cloudevents(parse_json(body), now=now, max_age=max_age, max_skew=max_skew, max_events=max_events)


def parse_cloudevents(
    document: object, *, now: datetime, max_age: timedelta, max_skew: timedelta, max_events: int
) -> list[UsageRecord | EventRejection]:
    """A CloudEvents JSON batch (an array), or a single structured event (an object)."""
    if isinstance(document, Mapping):
        document = [document]
    if not isinstance(document, list):
        raise PayloadError("The body must be a JSON array of CloudEvents", code="malformed_batch")
    if len(document) > max_events:
        raise PayloadError(
            f"A batch holds at most {max_events} events; this one has {len(document)}",
            code="batch_too_large",
            status=413,
        )
    return [_cloudevent(index, raw, now=now, max_age=max_age, max_skew=max_skew) for index, raw in enumerate(document)]


def _raw_id(raw: object) -> str:
    if isinstance(raw, Mapping):
        value = raw.get("id")
        if isinstance(value, str):
            return value[:200]
    return ""


def _cloudevent(
    index: int, raw: object, *, now: datetime, max_age: timedelta, max_skew: timedelta
) -> UsageRecord | EventRejection:
    if not isinstance(raw, Mapping):
        return EventRejection(index, "", "invalid_event", "", "an event must be a JSON object")
    try:
        if raw.get("specversion") != "1.0":
            raise EventProblem("invalid_specversion", "specversion", "must be '1.0'")
        event_type = raw.get("type")
        if not isinstance(event_type, str) or event_type not in ACCEPTED_EVENT_TYPES:  # a list is not hashable
            raise EventProblem("unsupported_type", "type", f"must be '{EVENT_TYPE}'")
        data = raw.get("data")
        if not isinstance(data, Mapping):
            raise EventProblem("invalid_field", "data", "must be an object")
        return record_from_fields(
            index=index,
            event_id=raw.get("id"),
            source=raw.get("source"),
            time=raw.get("time"),
            subject=raw.get("subject"),
            data=data,
            now=now,
            max_age=max_age,
            max_skew=max_skew,
        )
    except EventProblem as problem:
        return EventRejection(index, _raw_id(raw), problem.reason, problem.field, problem.message)
    except RecursionError:
        return EventRejection(index, _raw_id(raw), "invalid_event", "data", "nests too deeply")


# --- OTLP logs -------------------------------------------------------------------------------------------

SOURCE_ATTRIBUTES = ("aigw.source", "source", "event.source")


def _any_value(value: object) -> object:
    """An OTLP AnyValue in its JSON form ({"stringValue": ...}, {"intValue": "12"}, ...) as a plain value."""
    if not isinstance(value, Mapping):
        return None
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in value:
            return value[key]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values"))
    if "arrayValue" in value:
        return [_any_value(item) for item in (value["arrayValue"] or {}).get("values") or []]
    return None


def _attributes(items: object) -> dict[str, object]:
    if not isinstance(items, list):
        return {}
    return {
        str(item["key"]): _any_value(item.get("value"))
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("key"), str)
    }


def unix_nanos(value: object) -> str | None:
    try:
        nanos = int(str(value))
    except (TypeError, ValueError):
        return None
    if nanos <= 0:
        return None
    seconds, remainder = divmod(nanos, 1_000_000_000)
    try:
        return (datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=remainder // 1000)).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def iter_otlp_records(document: object) -> Iterator[tuple[dict[str, object], dict[str, object], Mapping[str, Any]]]:
    """(resource attributes, record attributes, raw record) for each log record of an OTLP JSON document."""
    if not isinstance(document, Mapping):
        raise PayloadError("The body must be an OTLP ExportLogsServiceRequest", code="malformed_otlp")
    resource_logs = document.get("resourceLogs") or document.get("resource_logs") or []
    if not isinstance(resource_logs, list):
        raise PayloadError("resourceLogs must be an array", code="malformed_otlp")
    for resource_log in resource_logs:
        if not isinstance(resource_log, Mapping):
            raise PayloadError("resourceLogs entries must be objects", code="malformed_otlp")
        resource = _attributes((resource_log.get("resource") or {}).get("attributes"))
        for scope_log in resource_log.get("scopeLogs") or resource_log.get("scope_logs") or []:
            if not isinstance(scope_log, Mapping):
                raise PayloadError("scopeLogs entries must be objects", code="malformed_otlp")
            for record in scope_log.get("logRecords") or scope_log.get("log_records") or []:
                if not isinstance(record, Mapping):
                    raise PayloadError("logRecords entries must be objects", code="malformed_otlp")
                attributes = _attributes(record.get("attributes"))
                body = _any_value(record.get("body"))
                if isinstance(body, dict):  # a JSON access-log line carried as the body
                    attributes = {**body, **attributes}
                yield resource, attributes, record


def _text_attribute(attributes: Mapping[str, object], key: str, max_length: int = MAX_TEXT) -> str:
    value = attributes.get(key)
    if value is None or isinstance(value, str):
        return _plain(value, max_length)
    raise _NotSure


def _count_attribute(attributes: Mapping[str, object], key: str) -> int | None:
    """A count as Envoy's OpenTelemetry sink writes it: a decimal string, '-' when unset."""
    value = attributes.get(key)
    if value is None or value == "" or value == "-":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
        if number <= MAX_TOKENS:
            return number
    raise _NotSure


def _fast_log_record(
    index: int,
    event_id: object,
    source: object,
    time: object,
    attributes: Mapping[str, object],
    earliest: datetime,
    latest: datetime,
) -> UsageRecord:
    """record_from_fields for the common access-log record (string values only); _NotSure leaves the record to it."""
    if "usage" in attributes or not isinstance(source, str) or not isinstance(time, str):
        raise _NotSure
    if not (event_id is None or isinstance(event_id, str)):
        raise _NotSure
    source_text = _plain(source)
    if not source_text:
        raise _NotSure
    request_id = _text_attribute(attributes, "request_id")
    event_id_text = _plain(event_id, 200)
    if not event_id_text:
        if not request_id:
            raise _NotSure
        event_id_text = derive_event_id(source_text, request_id)
    try:
        event_time = parse_time(time, "attributes.start_time")
    except EventProblem:
        raise _NotSure from None
    if not earliest <= event_time <= latest:
        raise _NotSure
    client_id = _text_attribute(attributes, "credential_id", 200)
    if not client_id and attributes.get("subject") is not None:
        raise _NotSure
    models: list[str] = []
    for name in MODEL_FIELDS:
        model = _text_attribute(attributes, name)
        if model and model not in models:
            models.append(model)
    status_code = _count_attribute(attributes, "status_code")
    if status_code is not None and status_code > 999:
        raise _NotSure
    provider = attributes.get("provider") or attributes.get("backend")
    if not (provider is None or isinstance(provider, str)):
        raise _NotSure
    return UsageRecord(
        index=index,
        event_id=event_id_text,
        source=source_text,
        event_time=event_time,
        client_id=client_id,
        model_names=tuple(models),
        provider=_plain(provider),
        route=_text_attribute(attributes, "route", 500),
        status_code=status_code,
        duration_ms=_count_attribute(attributes, "duration_ms"),
        time_to_first_token_ms=_count_attribute(attributes, "time_to_first_token_ms"),
        input_tokens=_count_attribute(attributes, "input_tokens"),
        cached_input_tokens=_count_attribute(attributes, "cached_input_tokens"),
        cache_write_tokens=_count_attribute(attributes, "cache_creation_input_tokens"),
        output_tokens=_count_attribute(attributes, "output_tokens"),
        reasoning_tokens=_count_attribute(attributes, "reasoning_tokens"),
    )


def parse_otlp(
    document: object, *, now: datetime, max_age: timedelta, max_skew: timedelta, max_events: int
) -> list[UsageRecord | EventRejection]:
    """OTLP log records of the gateway's access log (section 4.2 of the metering reference) as usage events, from
    the JSON encoding of an export."""
    try:
        records = (
            (resource, attributes, record.get("timeUnixNano"), record.get("observedTimeUnixNano"))
            for resource, attributes, record in iter_otlp_records(document)
        )
        return _parse_otlp(records, now=now, max_age=max_age, max_skew=max_skew, max_events=max_events)
    except RecursionError:
        raise PayloadError("The export nests too deeply", code="malformed_otlp") from None


def _protobuf_value(value: Any) -> object:
    """An OTLP AnyValue message as a plain value (read field by field: no conversion of the whole export)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {item.key: _protobuf_value(item.value) for item in value.kvlist_value.values}
    if kind == "array_value":
        return [_protobuf_value(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return None
    return getattr(value, kind)


def _protobuf_attributes(items: Any) -> dict[str, object]:
    """Attributes of a record; Envoy writes every one as a string value, so that case is read directly."""
    attributes: dict[str, object] = {}
    for item in items:
        value = item.value
        text = value.string_value  # "" also when the value is of another kind: only then is the kind asked
        attributes[item.key] = text if text or value.WhichOneof("value") == "string_value" else _protobuf_value(value)
    return attributes


def _iter_protobuf_records(message: Any) -> Iterator[tuple[dict[str, object], dict[str, object], object, object]]:
    for resource_log in message.resource_logs:
        resource = _protobuf_attributes(resource_log.resource.attributes)
        for scope_log in resource_log.scope_logs:
            for record in scope_log.log_records:
                attributes = _protobuf_attributes(record.attributes)
                if record.body.WhichOneof("value") == "kvlist_value":  # a JSON access-log line carried as the body
                    body = _protobuf_value(record.body)
                    if isinstance(body, dict):
                        attributes = {**body, **attributes}
                yield resource, attributes, record.time_unix_nano, record.observed_time_unix_nano


def parse_otlp_protobuf(
    message: Any, *, now: datetime, max_age: timedelta, max_skew: timedelta, max_events: int
) -> list[UsageRecord | EventRejection]:
    """The same, from a decoded ExportLogsServiceRequest protobuf message."""
    try:
        return _parse_otlp(
            _iter_protobuf_records(message), now=now, max_age=max_age, max_skew=max_skew, max_events=max_events
        )
    except RecursionError:
        raise PayloadError("The export nests too deeply", code="malformed_otlp") from None


def _parse_otlp(
    records: Iterator[tuple[dict[str, object], dict[str, object], object, object]],
    *,
    now: datetime,
    max_age: timedelta,
    max_skew: timedelta,
    max_events: int,
) -> list[UsageRecord | EventRejection]:
    results: list[UsageRecord | EventRejection] = []
    for index, (resource, attributes, time_unix_nano, observed_unix_nano) in enumerate(records):
        if index >= max_events:
            raise PayloadError(f"An export holds at most {max_events} log records", code="batch_too_large", status=413)
        source = next(
            (
                attributes.get(key) or resource.get(key)
                for key in SOURCE_ATTRIBUTES
                if attributes.get(key) or resource.get(key)
            ),
            None,
        )
        time = attributes.get("start_time") or unix_nanos(time_unix_nano) or unix_nanos(observed_unix_nano)
        event_id = attributes.get("event.id")
        try:
            event_type = attributes.get("event.type")
            if event_type not in (None, "", *ACCEPTED_EVENT_TYPES):
                raise EventProblem("unsupported_type", "attributes.event.type", f"must be '{EVENT_TYPE}'")
            try:
                results.append(
                    _fast_log_record(index, event_id, source, time, attributes, now - max_age, now + max_skew)
                )
                continue
            except _NotSure:
                pass
            results.append(
                record_from_fields(
                    index=index,
                    event_id=event_id,
                    source=source,
                    time=time,
                    data=attributes,
                    time_field="attributes.start_time",
                    prefix="attributes.",
                    now=now,
                    max_age=max_age,
                    max_skew=max_skew,
                )
            )
        except EventProblem as problem:
            results.append(EventRejection(index, str(event_id or ""), problem.reason, problem.field, problem.message))
    return results
