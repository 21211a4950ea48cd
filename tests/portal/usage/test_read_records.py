"""contracts.ReadRecords: the columns a reader keeps beside the records it built a column at a time, which rating
takes instead of transposing the records back. They must always be the records' own columns, and vanish when the
list changes. Pure: no database."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from portal.usage import events, otlp_wire
from portal.usage.contracts import ReadRecords, UsageRecord
from portal.usage.services import ingest
from tests.portal.usage.test_events_fast import WINDOW, _attributes, _event, _export

WIDE = {**WINDOW, "max_events": 1000}


def _transposed(records: list[Any]) -> list[list[Any]]:
    return [list(column) for column in zip(*records, strict=True)]


def _cloudevents(rng: random.Random, size: int) -> bytes:
    return json.dumps(
        [
            _event(
                request_id=f"r-{n}",
                credential_id=rng.choice(["key-a", "key-b", "-"]),
                model_requested=rng.choice(["m1", "m2"]),
                model_override=rng.choice([None, "m3"]),
                provider=rng.choice([None, "openai"]),
                usage={"input_tokens": rng.choice([None, 0, 7, 12345]), "output_tokens": rng.choice([None, 3])},
            )
            | {"id": f"e-{n}", "subject": rng.choice(["key-s", None])}
            for n in range(size)
        ]
    ).encode()


def _otlp(rng: random.Random, size: int, scopes: int = 1) -> bytes:
    records = [
        _attributes(
            request_id=f"r-{n}",
            credential_id=rng.choice(["key-a", "key-b"]),
            model_requested=rng.choice(["m1", "m2"]),
            input_tokens=rng.choice(["-", "5", "17"]),
        )
        for n in range(size)
    ]
    return _export(*records) if scopes == 1 else _export(*records, extra_resource=True)


@pytest.mark.parametrize("seed", range(6))
def test_the_kept_columns_are_the_records_own_on_both_wire_formats(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 40])
    readings = [
        events.read_cloudevents(_cloudevents(rng, size), **WIDE),
        events.read_cloudevents(_cloudevents(rng, size), **WIDE, native=False),
        otlp_wire.read_otlp_protobuf(_otlp(rng, size), **WIDE),
    ]
    for records in readings:
        assert isinstance(records, ReadRecords), type(records)
        assert records.columns is not None
        assert [list(column) for column in records.columns] == _transposed(records)
        assert ingest._columns(records) == list(records.columns)


def test_an_export_of_several_scopes_keeps_no_columns_that_would_describe_only_one() -> None:
    records = otlp_wire.read_otlp_protobuf(_otlp(random.Random(1), 4, scopes=2), **WIDE)
    assert [record.index for record in records] == list(range(len(records)))
    assert getattr(records, "columns", None) is None
    assert [list(column) for column in ingest._columns(records)] == _transposed(records)


@pytest.mark.parametrize(
    "change",
    [
        lambda records: records.append(records[0]),
        lambda records: records.extend(records[:1]),
        lambda records: records.insert(0, records[-1]),
        lambda records: records.pop(),
        lambda records: records.remove(records[0]),
        lambda records: records.reverse(),
        lambda records: records.sort(key=lambda record: record.event_id),
        lambda records: records.__setitem__(0, records[-1]),
        lambda records: records.__delitem__(slice(0, 1)),
        lambda records: records.__iadd__(records[:1]),
        lambda records: records.__imul__(1),
        lambda records: records.clear(),
    ],
)
def test_any_change_to_the_list_drops_its_columns_and_rating_transposes_the_records(change: Any) -> None:
    records = events.read_cloudevents(_cloudevents(random.Random(2), 5), **WIDE)
    assert isinstance(records, ReadRecords)
    assert records.columns is not None
    change(records)
    assert records.columns is None
    expected = _transposed(records) if records else [[]] * len(UsageRecord._fields)
    assert [list(column) for column in ingest._columns(records)] == expected


def test_reading_then_rating_gives_the_same_columns_as_a_plain_list_of_the_records() -> None:
    records = events.read_cloudevents(_cloudevents(random.Random(3), 30), **WIDE)
    kept, plain = ingest._columns(records), ingest._columns(list(records))
    assert [list(column) for column in kept] == [list(column) for column in plain]
