"""The C scan of CloudEvents batches (portal/usage/_cloudevents_scan.c): built by `make install`, reading what it
reads as msgspec decodes it into the typed structs, declining the rest, and never changing read_cloudevents' answer:
the equivalence cases and random batches of tests/portal/usage/test_events_fast.py run with and without it, and a
differential fuzz over mutated bodies compares the two readings."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from portal.usage import events
from tests.portal.usage.test_events_fast import CLOUDEVENT_CASES, NOW, WINDOW, _event, random_cloudevent_batches

SOURCE = Path(events.__file__).with_name("_cloudevents_scan.c")
MAX_EVENTS = WINDOW["max_events"]


def test_the_scan_is_built_from_the_current_source() -> None:
    """`make install` builds it (k8s/image/steps.sh extensions): without it every batch would silently take the
    slower msgspec reading."""
    from portal.usage import _cloudevents_scan

    built = Path(_cloudevents_scan.__file__)
    assert events._scan is _cloudevents_scan.scan
    assert built.stat().st_mtime >= SOURCE.stat().st_mtime, f"{built.name} is older than its source: make install"


def test_the_scan_returns_the_columns_of_the_typed_reading() -> None:
    """Its columns are the columnar reading's, and they cover every field of the structs msgspec decodes into: a
    field added to one is a column the scan must learn."""
    from portal.usage import _cloudevents_scan

    assert _cloudevents_scan.COLUMNS == events._SCAN_COLUMNS
    struct_fields = {
        field.name for struct in (events._CloudEvent, events._Data) for field in msgspec.structs.fields(struct)
    }
    assert struct_fields - {"data", "usage"} == set(events._SCAN_COLUMNS)
    assert {field.name for field in msgspec.structs.fields(events._Usage)} == set(events.TOKEN_FIELDS)


def scan(body: bytes, max_events: int = MAX_EVENTS) -> list[list[Any]] | None:
    assert events._scan is not None
    return events._scan(body, max_events)


def decoded_columns(body: bytes) -> list[list[Any]]:
    """The columns the columnar reading takes from msgspec's structs (events._columnar_records)."""
    batch = events._BATCH_DECODER.decode(body)
    data = [event.data for event in batch]
    usages = [item.usage if item.usage is not None else item for item in data]
    return [
        *([getattr(event, name) for event in batch] for name in events._EVENT_COLUMNS),
        *([getattr(item, name) for item in data] for name in events._DATA_COLUMNS),
        *([getattr(usage, name) for usage in usages] for name in events.TOKEN_FIELDS),
    ]


def by_column(body: bytes) -> dict[str, list[Any]]:
    columns = scan(body)
    assert columns is not None
    return dict(zip(events._SCAN_COLUMNS, columns, strict=True))


def _answer(read: Callable[[], object]) -> object:
    try:
        return read()
    except Exception as error:  # the same refusal either way: type and message
        return (type(error), str(error), getattr(error, "code", None), getattr(error, "status", None))


def _reference(body: bytes) -> object:
    return _answer(lambda: events.parse_cloudevents(events.parse_json(body), **WINDOW))


NATIVE = pytest.mark.parametrize("native", [True, False], ids=["scan", "msgspec"])


# --- what the scan reads ----------------------------------------------------------------------------------------


def test_the_scan_reads_each_field_and_takes_the_tokens_of_usage_or_else_of_data() -> None:
    first = _event(usage={"input_tokens": 5, "output_tokens": 0}, input_tokens=7, status_code=200, route="r/0")
    second = _event(usage=None, input_tokens=9, cached_input_tokens=123456789, provider=None)
    third = {**_event(), "id": None, "subject": None}
    del third["data"]["usage"]
    third["data"]["output_tokens"] = 3
    columns = by_column(json.dumps([first, second, third]).encode())
    assert columns["input_tokens"] == [5, 9, None]  # usage's, else data's own (usage null or absent)
    assert columns["output_tokens"] == [0, None, 3]
    assert columns["cached_input_tokens"] == [None, 123456789, None]
    assert columns["status_code"] == [200, None, None]
    assert columns["route"] == ["r/0", None, None]
    assert columns["id"] == ["e-1", "e-1", None]
    assert columns["subject"] == ["alpha.k1", "alpha.k1", None]
    assert columns["provider"] == [None, None, None]
    assert columns["specversion"] == ["1.0"] * 3
    # repeated texts are one object, across columns too
    assert columns["source"][0] is columns["source"][2]
    assert columns["credential_id"][0] is columns["subject"][0]
    assert scan(json.dumps([first, second, third]).encode()) == decoded_columns(
        json.dumps([first, second, third]).encode()
    )


def test_the_scan_skips_unknown_keys_and_whitespace_as_msgspec_does() -> None:
    event = _event()
    event["datacontenttype"] = "application/json"
    event["extension"] = {"list": [1, -2.5e-3, 0, "huge", True, False, None, "x", [], {}], "n": "minus zero"}
    event["data"]["extra"] = [[[[[[["seven deep"]]]]]]]
    event["data"]["usage"]["note"] = "ignored"
    event["data"]["usage"]["request_id"] = 5  # a data key, unknown in usage

    def dumps(batch: list[Any], **options: Any) -> bytes:  # numbers JSON's encoder does not write, put in by hand
        return json.dumps(batch, **options).replace('"huge"', "1E+999").replace('"minus zero"', "-0").encode()

    for body in (
        dumps([event, event]),
        dumps([event], indent="\t"),
        dumps([event], separators=(",", ":")),
        b" \r\n\t" + dumps([event], indent=1).replace(b"\n", b"\r\n") + b"\n ",
        b"[]",
        b" [ ] ",
    ):
        assert scan(body) == decoded_columns(body), body


def test_the_scan_reads_bounds_and_counts_to_their_limits() -> None:
    event = _event(
        route="r" * 500,
        model="m" * 255,
        credential_id="c" * 200,
        usage={"input_tokens": 999_999_999, "output_tokens": 0, "reasoning_tokens": 1},
    )
    event["id"] = "i" * 200
    event["subject"] = "s" * 200
    event["source"] = "s" * 255
    event["time"] = "2026-12-04T11:00:00." + "0" * 43 + "Z"  # 64 characters
    body = json.dumps([event]).encode()
    assert scan(body) == decoded_columns(body)
    assert scan(json.dumps([event] * 3).encode(), 3) is not None


def _with(event: dict[str, Any], **changes: Any) -> bytes:
    changed = json.loads(json.dumps(event))
    for path, value in changes.items():
        holder = changed
        *parents, key = path.split("__")
        for parent in parents:
            holder = holder[parent]
        if value is _REMOVED:
            del holder[key]
        else:
            holder[key] = value
    return json.dumps([changed]).encode()


_REMOVED = object()
_PLAIN = json.dumps([_event()]).encode()

DECLINED: dict[str, bytes] = {
    # the body
    "an object, not an array": json.dumps(_event()).encode(),
    "an empty body": b"",
    "a number": b"12",
    "trailing garbage": _PLAIN + b"x",
    "two arrays": _PLAIN + _PLAIN,
    "a trailing comma": _PLAIN[:-1] + b",]",
    "a missing comma": b"[" + _PLAIN[1:-1] + b" " + _PLAIN[1:],
    "a truncated body": _PLAIN[:-1],
    "an event that is not an object": b"[1]",
    "a null event": b"[null]",
    "a form feed": b"\x0c" + _PLAIN,
    "a byte order mark": b"\xef\xbb\xbf" + _PLAIN,
    "more events than max_events": json.dumps([_event()] * (MAX_EVENTS + 1)).encode(),
    # strings
    "an escape": _with(_event(), source="aigw:\\/\\/eu"),
    "an escaped quote": _with(_event(), data__route='r"0'),
    "a unicode escape in a key": _PLAIN.replace(b'"source"', b'"\\u0073ource"'),
    "non-ASCII": _with(_event(), data__model="é").replace(b"\\u00e9", "é".encode()),
    "invalid UTF-8": _PLAIN.replace(b"gpt", b"g\xffp"),
    "a raw control character": _PLAIN.replace(b"gpt", b"g\tp"),
    "a DEL": _PLAIN.replace(b"gpt", b"g\x7fp"),
    "an unterminated string": b'[{"specversion": "1.0',
    "an id past 200": _with(_event(), id="i" * 201),
    "a subject past 200": _with(_event(), subject="s" * 201),
    "a credential past 200": _with(_event(), data__credential_id="c" * 201),
    "a model past 255": _with(_event(), data__model="m" * 256),
    "a source past 255": _with(_event(), source="s" * 256),
    "a backend past 255": _with(_event(), data__backend="b" * 256),
    "a route past 500": _with(_event(), data__route="r" * 501),
    "a time past 64": _with(_event(), time="2026-12-04T11:00:00." + "0" * 44 + "Z"),
    # keys
    "a key twice": _PLAIN.replace(b'"source": "aigw://eu/gw"', b'"source": "a", "source": "aigw://eu/gw"'),
    "data twice": _PLAIN[:-2] + b', "data": {}}]',
    "a data key twice": _PLAIN.replace(b'"model_requested": "gpt"', b'"model": "a", "model": "gpt"'),
    "a usage key twice": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": 10, "input_tokens": 10'),
    "no specversion": _with(_event(), specversion=_REMOVED),
    "no type": _with(_event(), type=_REMOVED),
    "no source": _with(_event(), source=_REMOVED),
    "no time": _with(_event(), time=_REMOVED),
    "no data": _with(_event(), data=_REMOVED),
    "a key without a value": _PLAIN.replace(b'"subject": "alpha.k1"', b'"subject"'),
    "a key without quotes": _PLAIN.replace(b'"subject"', b"subject"),
    # types
    "a null specversion": _with(_event(), specversion=None),
    "a null source": _with(_event(), source=None),
    "a null time": _with(_event(), time=None),
    "a number for a text": _with(_event(), id=12),
    "a bool for a text": _with(_event(), data__route=True),
    "an object for a text": _with(_event(), subject={}),
    "null data": _with(_event(), data=None),
    "a list for data": _with(_event(), data=[]),
    "a text for usage": _with(_event(), data__usage="lots"),
    "a text for a count": _with(_event(), data__usage__input_tokens="12"),
    "a text for a data count": _with(_event(), data__status_code="200"),
    "true for a count": _with(_event(), data__duration_ms=True),
    "false for a count": _with(_event(), data__usage__output_tokens=False),
    "a list for a count": _with(_event(), data__input_tokens=[1]),
    # numbers
    "a negative count": _with(_event(), data__usage__input_tokens=-1),
    "minus zero": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": -0'),
    "ten digits": _with(_event(), data__usage__input_tokens=1_000_000_000),
    "a leading zero": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": 010'),
    "a fraction": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": 10.0'),
    "an exponent": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": 1e1'),
    "a capital exponent": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": 1E1'),
    "a plus sign": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": +10'),
    "NaN": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": NaN'),
    "nul": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": nul'),
    "nullx": _PLAIN.replace(b'"input_tokens": 10', b'"input_tokens": nullx'),
    # unknown values
    "nesting past 8 in an unknown key": _with(_event(), extra=json.loads("[" * 9 + "]" * 9)),
    "an escape in an unknown key": _with(_event(), extra="a\nb"),
    "an unknown number without digits": _PLAIN[:-2] + b', "extra": -}]',
    "an unknown number ending in a point": _PLAIN[:-2] + b', "extra": 1.}]',
    "an unknown number with a leading zero": _PLAIN[:-2] + b', "extra": 01}]',
    "an unknown exponent without digits": _PLAIN[:-2] + b', "extra": 1e+}]',
    "an unknown trailing comma": _PLAIN[:-2] + b', "extra": [1,]}]',
    "an unknown object's trailing comma": _PLAIN[:-2] + b', "extra": {"a": 1,}}]',
    "an unknown literal": _PLAIN[:-2] + b', "extra": True}]',
}


@pytest.mark.parametrize("what", sorted(DECLINED))
def test_the_scan_declines_what_it_is_not_sure_of(what: str) -> None:
    assert scan(DECLINED[what]) is None
    assert scan(_PLAIN) is not None  # the body it was made from is read


@pytest.mark.parametrize("what", sorted(DECLINED))
def test_what_the_scan_declines_is_read_as_without_it(what: str) -> None:
    body = DECLINED[what]
    with_scan = _answer(lambda: events.read_cloudevents(body, **WINDOW))
    assert with_scan == _answer(lambda: events.read_cloudevents(body, **WINDOW, native=False))


def test_the_scan_refuses_arguments_it_cannot_use() -> None:
    assert events._scan is not None
    with pytest.raises(TypeError):
        events._scan("text", 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        events._scan(b"[]")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="negative"):
        events._scan(b"[]", -1)
    assert events._scan(memoryview(b"[]"), 0) == [[] for _ in events._SCAN_COLUMNS]  # type: ignore[arg-type]
    assert events._scan(b"[]", 0) is not None
    assert events._scan(_PLAIN, 0) is None


# --- the reading with the scan equals the reading without it, and the reference ---------------------------------


@NATIVE
@pytest.mark.parametrize("batch", CLOUDEVENT_CASES)
def test_the_cloudevents_cases_read_as_the_reference(batch: list[dict[str, Any]], native: bool) -> None:
    body = json.dumps(batch).encode()
    assert events.read_cloudevents(body, **WINDOW, native=native) == _reference(body)


@NATIVE
def test_random_batches_read_as_the_reference(native: bool) -> None:
    """test_events_fast's 1,000 random batches (events sharing one shape, a few values varied), read with and
    without the scan; where the scan reads a batch, its columns are the decoded structs' and its records the
    reference's."""
    earliest, latest = NOW - WINDOW["max_age"], NOW + WINDOW["max_skew"]
    scanned = taken = 0
    for case, batch, body in random_cloudevent_batches():
        assert events.read_cloudevents(body, **WINDOW, native=native) == _reference(body), (case, batch)
        if not native:
            continue
        columns = scan(body)
        if columns is None:
            continue
        scanned += 1
        assert columns == decoded_columns(body), (case, batch)
        try:
            records = events._records_of_columns(columns, earliest, latest, scanned=True)
        except events._NotSure:
            continue
        taken += 1
        assert records == _reference(body), (case, batch)
    assert scanned >= 300 or not native, scanned
    assert taken >= 100 or not native, taken


# --- the differential fuzz --------------------------------------------------------------------------------------


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its members in order, a key possibly twice."""


def _tree(value: Any) -> Any:
    if isinstance(value, dict):
        return _Pairs((key, _tree(item)) for key, item in value.items())
    if isinstance(value, list):
        return [_tree(item) for item in value]
    return value


def _serialize(value: Any, rng: random.Random) -> str:
    space = rng.choice(["", " ", "", "\n  ", "\t", "\r\n"])
    if isinstance(value, _Pairs):
        members = [f"{json.dumps(key)}:{space}{_serialize(item, rng)}" for key, item in value]
        return "{" + space + f",{space}".join(members) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_serialize(item, rng) for item in value) + "]"
    if isinstance(value, _Raw):
        return value.text
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


class _Raw:
    """Text put into the body as it is (numbers JSON's encoder would not write, invalid JSON)."""

    def __init__(self, text: str) -> None:
        self.text = text


_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    999_999_999,
    1_000_000_000,
    2**31,
    2**64,
    1.0,
    2.5,
    _Raw("1e2"),
    _Raw("-0"),
    _Raw("1e999"),
    _Raw("010"),
    _Raw("NaN"),
    "",
    "-",
    "1.0",
    "12",
    "é",
    "a\u0000b",
    "a\nb",
    "x" * 201,
    "r" * 501,
    "2026-12-04T11:00:00Z",
    "2026-12-04T11:00:00",
    "ai.gateway.llm.usage.v1",
    {},
    [],
    {"input_tokens": 3},
    {"input_tokens": None, "output_tokens": 4},
    [[[[[[[[[[1]]]]]]]]]],
    _Raw("[" * 40 + "]" * 40),
]
_KEYS = [*events._SCAN_COLUMNS, "data", "usage", "datacontenttype", "extra", ""]


def _objects(value: Any) -> Iterator[_Pairs]:
    if isinstance(value, _Pairs):
        yield value
        for _, item in value:
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


def _mutate_tree(tree: list[Any], rng: random.Random) -> None:
    """One change of the document: a member duplicated, dropped, given another value or key, an unknown one added,
    or an event duplicated or dropped."""
    objects = list(_objects(tree))
    if not objects or rng.random() < 0.1:
        if tree and rng.random() < 0.5:
            del tree[rng.randrange(len(tree))]
        else:
            tree.insert(rng.randrange(len(tree) + 1), rng.choice([*tree, rng.choice(_VALUES)]) if tree else {})
        return
    target = rng.choice(objects)
    choice = rng.randrange(5)
    if choice == 0 and target:
        target.insert(rng.randrange(len(target) + 1), rng.choice(target))  # a key twice
    elif choice == 1 and target:
        del target[rng.randrange(len(target))]
    elif choice == 2 and target:
        index = rng.randrange(len(target))
        target[index] = (target[index][0], _tree(rng.choice(_VALUES)))
    elif choice == 3:
        target.insert(rng.randrange(len(target) + 1), (rng.choice(_KEYS), _tree(rng.choice(_VALUES))))
    elif target:
        index = rng.randrange(len(target))
        target[index] = (rng.choice(_KEYS), target[index][1])


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    position = rng.randrange(len(data))
    choice = rng.randrange(7)
    if choice == 0:
        return data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1 :]
    if choice == 1:
        return data[:position]  # truncated
    if choice == 2:  # an escape, maybe inside a string
        return data[:position] + rng.choice([b"\\", b'\\"', b"\\u0041", b"\\n", b'"']) + data[position:]
    if choice == 3:  # non-ASCII or a control character
        return (
            data[:position] + rng.choice(["é".encode(), b"\xff", b"\x80", b"\x00", b"\x1f", b"\x7f"]) + data[position:]
        )
    if choice == 4:  # whitespace, JSON's and not
        return data[:position] + rng.choice([b" ", b"\t", b"\n", b"\r", b"\x0c", b"\x0b", b"\xa0"]) + data[position:]
    if choice == 5:  # structure
        return data[:position] + rng.choice([b",", b":", b"[", b"]", b"{", b"}", b"0", b"-", b"null"]) + data[position:]
    span = rng.randrange(1, 12)
    return data[:position] + data[position : position + span] * 2 + data[position + span :]


def _seeds() -> list[list[Any]]:
    unknown = {**_event(), "datacontenttype": "application/json", "extension": {"a": [1, 2.5, None, True]}}
    return [
        *CLOUDEVENT_CASES,
        [_event(), {**_event(), "id": "e-2"}, {**_event(), "id": "e-3", "data": {"usage": None, "input_tokens": 4}}],
        [unknown],
        [{**_event(), "id": None, "data": {"request_id": "req-9", "model": "m", "status_code": 200}}],
    ]


def fuzzed_bodies(count: int, seed: int = 2027) -> Iterator[bytes]:
    """Mutations of valid batches, one to three changes each, structural (on the document) or of the bytes (also
    run under valgrind: see the report in portal/usage/_cloudevents_scan.c's history)."""
    rng = random.Random(seed)
    seeds = _seeds()
    for _ in range(count):
        tree = _tree(json.loads(json.dumps(rng.choice(seeds))))
        changes = rng.choice([1, 1, 2, 3])
        structural = sum(rng.random() < 0.6 for _ in range(changes))
        for _ in range(structural):
            _mutate_tree(tree, rng)
        body = _serialize(tree, rng).encode()
        for _ in range(changes - structural):
            body = _mutate_bytes(body, rng)
        yield body


def test_the_reading_with_the_scan_equals_the_reading_without_it_on_mutated_bodies() -> None:
    """3,000 mutations of valid batches: the scan never crashes, reads what it reads as msgspec decodes it, and the
    reading with it gives the reading without it (the same records, or the same refusal)."""
    scanned = declined = 0
    for body in fuzzed_bodies(3000):
        columns = scan(body)  # must neither crash nor raise: columns, or None when not sure
        without = _answer(lambda body=body: events.read_cloudevents(body, **WINDOW, native=False))
        assert _answer(lambda body=body: events.read_cloudevents(body, **WINDOW)) == without, body
        if columns is None:
            declined += 1
            continue
        scanned += 1
        assert columns == decoded_columns(body), body
    # Both sides are exercised: bodies the scan reads, and bodies it leaves to msgspec.
    assert scanned >= 400, scanned
    assert declined >= 1000, declined
