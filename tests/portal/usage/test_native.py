"""portal/usage/_native.c against its Python twins: the ids derived from request ids (events.derive_event_id), the
events' keys (ingest._keys_python) and the binary COPY of a staged batch (store._copy_data_python), byte for byte on
random input, and the same refusals. Pure: no database."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from portal.usage import events, store
from portal.usage.models import LATENCY_BOUNDS_MS
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


@pytest.fixture(params=[True, False], ids=["sha-extensions", "portable"])
def hashing(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each hash test twice: with the x86 SHA extensions (where this processor has them) and with the portable
    compression functions; _native.c chooses the extensions at import where present."""
    used = native.sha_extensions(request.param)
    yield used
    native.sha_extensions(True)


def test_the_sha_extensions_are_used_where_the_processor_has_them() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert native.sha_extensions(True) == (" sha_ni" in flags and " sse4_1" in flags)


@pytest.mark.parametrize("seed", range(5))
def test_keys_are_sha256_of_source_and_id_as_the_python_twin_computes_them(seed: int, hashing: bool) -> None:
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


def test_keys_refuse_what_str_encode_refuses(hashing: bool) -> None:
    with pytest.raises(UnicodeEncodeError):
        native.keys(b"s\n", ["ok", "\ud800"])
    with pytest.raises(TypeError):
        native.keys(b"s\n", ["ok", 3])


def _texts(rng: random.Random) -> list[str]:
    alphabet = "abcXYZ-_:/0123456789é☃\U0001f600|\n"
    # Lengths around the hashes' padding edges (55, 56 and 64 bytes a block) and past two blocks.
    return ["".join(rng.choice(alphabet) for _ in range(length)) for length in [*range(0, 140), 1000]]


@pytest.mark.parametrize("seed", range(4))
def test_derived_ids_are_uuid5_of_source_and_request_id_as_the_python_twin_derives_them(
    seed: int, hashing: bool
) -> None:
    rng = random.Random(seed)
    request_ids = _texts(rng)
    source = rng.choice(["aigw://eu1/gw", "", "s" * 70, "é|"])
    expected = [events.derive_event_id(source, request_id) for request_id in request_ids]
    assert events.derive_event_ids(source, request_ids) == expected
    assert expected[5] == str(uuid.uuid5(events.EVENT_ID_NAMESPACE, f"{source}|{request_ids[5]}"))
    with pytest.raises(UnicodeEncodeError):
        events.derive_event_ids(source, ["ok", "\ud800"])  # as str.encode() refuses a lone surrogate


def _rated_batch(rng: random.Random, size: int) -> store.StagedBatch:
    """A batch as ingestion stages it: a few teams, models, credentials and deployments over a few hours, absent
    counts and statuses, request-health values on and around every bucket bound, some rows quarantined."""
    base = datetime(2026, 11, 30, 22, tzinfo=UTC)
    edges = [bound + delta for bound in (0, *LATENCY_BOUNDS_MS) for delta in (-1, 0, 1) if bound + delta >= 0]
    credentials = [rng.randint(1, 40) for _ in range(size)]
    quarantined = [rng.random() < 0.1 for _ in range(size)]

    def maybe(value: int) -> int | None:
        return None if rng.random() < 0.15 else value

    return store.StagedBatch(
        [base + timedelta(seconds=rng.randint(0, 4 * 3600), microseconds=rng.randint(0, 999_999)) for _ in range(size)],
        [rng.randbytes(16) for _ in range(size)],
        [1] * size,
        [None if gone else credential % 5 + 1 for credential, gone in zip(credentials, quarantined, strict=True)],
        [None if gone else credential for credential, gone in zip(credentials, quarantined, strict=True)],
        [None if gone else rng.randint(1, 4) for gone in quarantined],
        [None if gone else rng.randint(1, 9) for gone in quarantined],
        [rng.choice([None, None, 7, 8]) for _ in range(size)],
        [None] * size,
        [None if gone else rng.choice([0, rng.randint(0, 10**15), 2**63 - 1]) for gone in quarantined],
        [maybe(rng.choice([200, 399, 400, 429, 503])) for _ in range(size)],
        [maybe(rng.choice([*edges, rng.randint(0, 10**6)])) for _ in range(size)],
        [maybe(rng.choice([*edges, rng.randint(0, 10**6)])) for _ in range(size)],
        *([maybe(rng.randint(0, 2**31 - 1)) for _ in range(size)] for _ in range(5)),
        [rng.randint(1, 7) if gone else None for gone in quarantined],
        {},
    )


def _sorted(deltas: list[store.Delta]) -> list[store.Delta]:
    return sorted(
        deltas,
        key=lambda delta: (delta.hour, delta.team_id, delta.model_id, delta.credential_id, delta.deployment_id or 0),
    )


@pytest.mark.parametrize("seed", range(30))
def test_the_deltas_of_a_random_batch_are_the_python_twins(seed: int) -> None:
    rng = random.Random(seed)
    batch = _rated_batch(rng, rng.choice([0, 1, 50, 3000]))
    skip = set(rng.sample(range(len(batch.event_times)), len(batch.event_times) // 7))
    expected = _sorted(store.deltas_python(batch, skip))
    assert (
        _sorted([store.Delta(*delta) for delta in native.deltas(store._delta_columns(batch), skip, LATENCY_BOUNDS_MS)])
        == expected
    )
    assert _sorted(store.batch_deltas(batch, skip)) == expected
    rated = [position for position, code in enumerate(batch.quarantines) if code is None and position not in skip]
    assert sum(delta.requests for delta in expected) == len(rated)
    assert sum(delta.cost_pico for delta in expected) == sum(batch.costs_pico[position] or 0 for position in rated)


def test_deltas_bucket_request_health_as_the_sql_ranges_did() -> None:
    """[low, high) for each pair of edges (0 and LATENCY_BOUNDS_MS), the last one open; absent in none."""
    durations = [0, 49, 50, 99, 100, 119_999, 120_000, 10**7, None]
    size = len(durations)
    at = datetime(2026, 12, 1, 10, 59, 59, 999_999, tzinfo=UTC)
    batch = store.StagedBatch(
        [at] * size,
        [b"k" * 16] * size,
        [1] * size,
        [1] * size,
        [2] * size,
        [3] * size,
        [None] * size,
        [None] * size,
        [None] * size,
        [5] * size,
        [200] * size,
        durations,
        [None] * size,
        *([None] * size for _ in range(5)),
        [None] * size,
        {},
    )
    for deltas in (
        store.deltas_python(batch, set()),
        [store.Delta(*delta) for delta in native.deltas(store._delta_columns(batch), set(), LATENCY_BOUNDS_MS)],
    ):
        (delta,) = deltas
        assert delta.latency_buckets == [2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2]
        assert delta.ttft_buckets == [0] * 12
        assert (delta.requests, delta.unmetered_requests, delta.cost_pico) == (9, 9, 45)
        assert store._PG_EPOCH + timedelta(microseconds=delta.hour) == datetime(2026, 12, 1, 10, tzinfo=UTC)
        assert store._PG_EPOCH + timedelta(microseconds=delta.last_event_at) == at


@pytest.mark.django_db
def test_deltas_reach_the_table_with_their_labels_and_times_exact() -> None:
    """_insert_deltas writes COPY's text format: labels holding its special characters arrive as they were."""
    from django.db import connection

    at = datetime(2026, 12, 1, 10, 59, 59, 999_999, tzinfo=UTC)
    batch = store.StagedBatch(
        [at, at], [b"k" * 16] * 2, [1] * 2, [1] * 2, [2, 3], [3] * 2, [None] * 2,
        [None, 4], [None] * 2, [2**63 - 1, 2**63 - 1], [200] * 2, [5, None], [None] * 2,
        *([7, None] for _ in range(5)), [None] * 2, {},
    )  # fmt: skip
    labels = {3: "llama\\3\tx"}, {2: "key\none\r", 3: "\\N"}
    with connection.cursor() as cursor:
        store._insert_deltas(cursor, store.batch_deltas(batch, set()), model_slugs=labels[0], client_ids=labels[1])
        cursor.execute(
            "SELECT hour, credential_id, deployment_id, model_slug, client_id, cost_pico, last_event_at, "
            "latency_buckets, input_tokens, unmetered_requests FROM usage_rollup_delta ORDER BY credential_id"
        )
        rows = cursor.fetchall()
    hour = datetime(2026, 12, 1, 10, tzinfo=UTC)
    latency = [1] + [0] * len(LATENCY_BOUNDS_MS)
    assert rows == [
        (hour, 2, None, "llama\\3\tx", "key\none\r", 2**63 - 1, at, latency, 7, 0),
        (hour, 3, 4, "llama\\3\tx", "\\N", 2**63 - 1, at, [0] * len(latency), 0, 1),
    ]


class _Prices:
    """A tariff's prices as ingest._charges reads them (rating.Tariff's attributes)."""

    def __init__(self, rng: random.Random) -> None:
        big = rng.random() < 0.2  # prices whose products pass 64 bits: both must refuse them as out of range
        self.input_micro, self.cached_micro, self.write_micro, self.output_micro, self.reasoning_micro = (
            rng.choice([0, 1, rng.randint(1, 10**8), 2**62 if big else 7]) for _ in range(5)
        )
        self.reasoning_priced = rng.random() < 0.5


def _charged_as_the_twin(seed: int) -> bool:
    """Charges a random batch both ways, asserts they agree; True when the batch was not rated (None)."""
    rng = random.Random(seed)
    tariffs = [_Prices(rng) for _ in range(rng.randint(1, 4))]
    size = rng.choice([1, 3, 200])
    inputs = [rng.choice([None, 0, rng.randint(0, 2**31 - 1)]) for _ in range(size)]
    cached = [rng.choice([None, 0, (value or 0) // 3]) for value in inputs]
    writes = [rng.choice([None, 0, (value or 0) // 5]) for value in inputs]
    outputs = [rng.choice([None, 0, rng.randint(0, 2**31 - 1)]) for _ in range(size)]
    reasonings = [rng.choice([None, 0, (value or 0) // 2]) for value in outputs]
    if rng.random() < 0.15:  # inconsistent: more cached and written than input, or more reasoning than output
        position = rng.randrange(size)
        inputs[position], cached[position], writes[position] = 10, 8, 3
    if rng.random() < 0.15:
        position = rng.randrange(size)
        outputs[position], reasonings[position] = 1, 2
    chosen = [rng.choice(tariffs) for _ in range(size)]
    counts = [inputs, cached, writes, outputs, reasonings]
    expected = ingest._charges_python(chosen, counts)  # type: ignore[arg-type]
    assert ingest._charges(chosen, counts) == expected  # type: ignore[arg-type]
    prices = [
        (t.input_micro, t.cached_micro, t.write_micro, t.output_micro, t.reasoning_micro, t.reasoning_priced)
        for t in tariffs
    ]
    indexes = [tariffs.index(tariff) for tariff in chosen]
    assert native.charges(indexes, prices, *counts, 2**63 - 1) == expected  # the C kernel itself, no fallback
    if expected is not None:
        assert len(expected[0]) == size
        assert max(expected[0]) <= 2**63 - 1
    return expected is None


@pytest.mark.parametrize("seed", range(60))
def test_charges_are_the_python_twins_costs_and_patterns(seed: int) -> None:
    _charged_as_the_twin(seed)


def test_the_random_charges_meet_both_rated_and_unrated_batches() -> None:
    assert {_charged_as_the_twin(seed) for seed in range(60)} == {True, False}
