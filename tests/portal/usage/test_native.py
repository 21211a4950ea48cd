"""portal/usage/_native.c against its Python twins: the ids derived from request ids (events.derive_event_id), the
events' keys (ingest._keys_python) and the binary COPY of a staged batch (store._copy_data_python), byte for byte on
random input, and the same refusals. Pure: no database."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from portal.usage import events, store
from portal.usage.services import ingest

native = pytest.importorskip("portal.usage._native", reason="built by make install")

INT32 = 2**31 - 1
INT16 = 2**15 - 1


def test_make_install_built_the_extension_and_the_store_uses_it() -> None:
    # `make install` and the image build compile it (k8s/image/steps.sh extensions): without it ingestion still
    # works, on the slower Python twins, so CI must not pass without it unnoticed.
    assert store.native is native
    assert events._native is native


def _value(rng: random.Random, low: int, high: int, nullable: bool = True) -> int | None:
    if nullable and rng.random() < 0.2:
        return None
    return rng.choice([low, high, rng.randint(low, high), 0 if low <= 0 else low])


def _batch(rng: random.Random, size: int) -> store.StagedBatch:
    base = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(-700_000, 2_900_000))
    times = [
        base + timedelta(seconds=rng.randint(-86_400 * 400, 86_400 * 400), microseconds=rng.randint(0, 999_999))
        for _ in range(size)
    ]
    times += [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)][: size // 10]
    times = times[:size]
    ids = [[_value(rng, 1, INT32) for _ in range(size)] for _ in range(6)]
    counts = [[_value(rng, 0, INT32) for _ in range(size)] for _ in range(7)]
    return store.StagedBatch(
        times,
        [rng.randbytes(rng.choice([16, 32])) for _ in range(size)],
        [rng.randint(1, INT32) for _ in range(size)],
        *ids,
        [_value(rng, 0, 2**63 - 1) for _ in range(size)],
        [_value(rng, 0, INT16) for _ in range(size)],
        *counts,
        [_value(rng, 0, INT16) for _ in range(size)],
        {},
    )


@pytest.mark.parametrize("seed", range(40))
def test_the_copy_of_a_random_batch_is_the_python_twins_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    batch = _batch(rng, rng.choice([0, 1, 2, 17, 300]))
    expected = store._copy_data_python(batch)
    assert native.copy_rows(tuple(batch[:19])) == expected
    assert store._copy_data(batch) == expected


def _with(batch: store.StagedBatch, column: int, position: int, value: Any) -> store.StagedBatch:
    columns = [list(values) for values in batch[:19]]
    columns[column][position] = value
    return store.StagedBatch(*columns, batch.details)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (9, -1),  # a cost of -1 would read back as absent
        (12, -1),  # a duration
        (18, -1),  # a quarantine code
        (3, 2**31),  # an id past int4
        (10, 2**15),  # a status past int2
        (9, 2**63),  # a cost past int8
        (2, None),  # a source is required
        (13, "12"),  # a count that is not an int
        (0, datetime(2026, 1, 1)),  # a naive time
    ],
)
def test_what_the_python_twin_refuses_the_extension_refuses(column: int, value: object) -> None:
    batch = _with(_batch(random.Random(column), 5), column, 3, value)
    with pytest.raises(Exception) as python_refusal:  # noqa: PT011 - struct.error, ValueError or TypeError
        store._copy_data_python(batch)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        native.copy_rows(tuple(batch[:19]))
    with pytest.raises(python_refusal.type):  # the store's answer is the twin's
        store._copy_data(batch)


def test_what_only_the_python_twin_takes_is_left_to_it() -> None:
    batch = _batch(random.Random(3), 4)
    east = timezone(timedelta(hours=5, minutes=30))
    moved = _with(batch, 0, 1, batch.event_times[1].astimezone(east))  # the same instant in another zone
    with pytest.raises(TypeError):
        native.copy_rows(tuple(moved[:19]))
    assert store._copy_data(moved) == store._copy_data_python(batch)
    short = _with(batch, 1, 2, b"short")  # struct pads a short key with zeros; keys are digests, never short
    with pytest.raises(TypeError):
        native.copy_rows(tuple(short[:19]))
    assert store._copy_data(short) == store._copy_data_python(short)


@pytest.mark.parametrize("seed", range(5))
def test_keys_are_sha256_of_source_and_id_as_the_python_twin_computes_them(seed: int) -> None:
    rng = random.Random(seed)
    ids = _texts(rng)
    source = rng.choice(["aigw://eu1/gw", "", "s" * 70, "é"])
    expected = [key[:16] for key in ingest._keys_python([source] * len(ids), ids)]
    assert native.keys(f"{source}\n".encode(), ids) == expected
    assert native.keys(f"{source}\n".encode(), tuple(ids)) == expected
    assert [key[:16] for key in ingest._keys([source] * len(ids), ids)] == expected
    assert (
        expected[3] == hashlib.sha256(f"{source}\n{ids[3]}".encode()).digest()[:16] == store.event_key(source, ids[3])
    )


def test_keys_refuse_what_str_encode_refuses() -> None:
    with pytest.raises(UnicodeEncodeError):
        native.keys(b"s\n", ["ok", "\ud800"])
    with pytest.raises(TypeError):
        native.keys(b"s\n", ["ok", 3])


def _texts(rng: random.Random) -> list[str]:
    alphabet = "abcXYZ-_:/0123456789é☃\U0001f600|\n"
    # Lengths around the hashes' padding edges (55, 56 and 64 bytes a block) and past two blocks.
    return ["".join(rng.choice(alphabet) for _ in range(length)) for length in [*range(0, 140), 1000]]


@pytest.mark.parametrize("seed", range(4))
def test_derived_ids_are_uuid5_of_source_and_request_id_as_the_python_twin_derives_them(seed: int) -> None:
    rng = random.Random(seed)
    request_ids = _texts(rng)
    source = rng.choice(["aigw://eu1/gw", "", "s" * 70, "é|"])
    expected = [events.derive_event_id(source, request_id) for request_id in request_ids]
    assert events.derive_event_ids(source, request_ids) == expected
    assert expected[5] == str(uuid.uuid5(events.EVENT_ID_NAMESPACE, f"{source}|{request_ids[5]}"))
    with pytest.raises(UnicodeEncodeError):
        events.derive_event_ids(source, ["ok", "\ud800"])  # as str.encode() refuses a lone surrogate
