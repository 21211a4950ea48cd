"""The columnar attribution and rating (ingest.rate_batch) against the row-wise reference (attribute_and_rate) on
random batches: managed models and team deployments served under shared names, prices that change inside the
batch, reasoning priced on some models only, absent counts, and the events the reference keeps in quarantine.
Pure: the lookups a batch reads from the database are built here."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from portal.deployments.contracts import ServedNameRef
from portal.gateway.contracts import CredentialRef
from portal.usage.contracts import PriceRef, UsageRecord
from portal.usage.rating import PriceBook
from portal.usage.selectors import ModelRef
from portal.usage.services import ingest

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _world(rng: random.Random) -> ingest._Lookups:
    credentials = {
        f"client-{number}": CredentialRef(100 + number, f"k{number}", 10 + number % 3, f"team-{number % 3}",
                                          f"key {number}", f"client-{number}")
        for number in range(6)
    }  # fmt: skip
    names = {f"model-{number}": ModelRef(number, f"model-{number}") for number in range(1, 5)}
    names["alias-1"] = names["model-1"]
    prices = []
    price_id = 0
    for model_id in range(1, 5):
        usage_types = ["input", "output", *rng.sample(["cached_input", "cache_write", "reasoning"], rng.randint(0, 3))]
        changes = sorted(T0 + timedelta(minutes=rng.randint(-30, 90)) for _ in range(rng.randint(0, 2)))
        for start in [T0 - timedelta(days=1) if model_id != 4 else T0 + timedelta(minutes=20), *changes]:
            for usage_type in usage_types:
                price_id += 1
                amount = Decimal(rng.randint(0, 30_000_000)).scaleb(-6)
                prices.append((model_id, PriceRef(price_id, usage_type, amount, start)))
    # Team deployments served under a name of their own, and under a catalog model's name for a while.
    served = {
        "team-llama": [
            ServedNameRef(7, "llama", 10, 71, 3, "model-3", T0 - timedelta(days=1), T0 + timedelta(minutes=40)),
            ServedNameRef(8, "llama-2", 11, 81, 2, "model-2", T0 + timedelta(minutes=40), None),
        ],
        "model-2": [ServedNameRef(9, "shadow", 12, 91, 2, "model-2", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))],
    }  # fmt: skip
    return ingest._Lookups(credentials, names, served, PriceBook(prices).tariff)


def _count(rng: random.Random, high: int) -> int | None:
    return None if rng.random() < 0.1 else rng.randint(0, high)


def _batch(rng: random.Random, *, irregular: bool) -> list[UsageRecord]:
    model_lists = [
        ("model-1",),
        ("alias-1", "model-1"),
        ("model-2",),
        ("model-3",),
        ("model-4",),
        ("nothing", "model-1"),
    ]
    if irregular or rng.random() < 0.3:
        model_lists += [("team-llama",), ("model-2", "team-llama")]
    clients = [f"client-{number}" for number in range(6)]
    if irregular:
        model_lists += [(), ("unknown",)]
        clients += ["", "client-unknown"]
    records = []
    for index in range(rng.randint(1, 60)):
        input_tokens = _count(rng, 5000)
        cached = _count(rng, (input_tokens or 0) // 2) if rng.random() < 0.5 else None
        writes = _count(rng, (input_tokens or 0) // 3) if rng.random() < 0.3 else None
        output_tokens = _count(rng, 2000)
        reasoning = _count(rng, output_tokens or 0) if rng.random() < 0.4 else None
        if irregular and rng.random() < 0.05:
            cached = (input_tokens or 0) + 1  # more cache reads than input
        if irregular and rng.random() < 0.05:
            reasoning = (output_tokens or 0) + 1
        records.append(
            UsageRecord(
                index,
                f"event-{index}",
                "aigw://test",
                T0 + timedelta(seconds=rng.randint(-1800, 5400)),
                rng.choice(clients),
                rng.choice(model_lists),
                "",
                "",
                rng.choice([200, 200, 503, None]),
                _count(rng, 9000),
                _count(rng, 900),
                input_tokens,
                cached,
                writes,
                output_tokens,
                reasoning,
            )
        )
    return records


def test_the_columnar_rating_equals_the_reference_on_random_batches() -> None:
    rng = random.Random(20261206)
    taken = 0
    for attempt in range(1500):
        lookups = _world(rng)
        records = _batch(rng, irregular=attempt % 3 == 0)
        reference = ingest._from_rows(records, ingest.attribute_and_rate(records, lookups))
        columnar = ingest._rated_columns(records, lookups)
        if columnar is None:
            assert any(reference.reasons), "the columnar rating left a batch whose every event is rated"
            continue
        taken += 1
        assert columnar == reference, attempt
    assert taken > 500  # most batches are regular: the columnar rating is what was compared


def test_rate_batch_says_why_each_event_of_an_irregular_batch_is_kept_in_quarantine() -> None:
    lookups = _world(random.Random(1))
    record = _batch(random.Random(2), irregular=False)[0]
    records = [record, record._replace(index=1, event_id="other", client_id="client-unknown")]
    assert ingest._rated_columns(records, lookups) is None
    rated = ingest._from_rows(records, ingest.attribute_and_rate(records, lookups))
    assert rated.reasons[1] == "unknown_credential"
    assert rated.credential_ids[1] is None
    assert rated.costs_pico[1] is None


def test_the_store_refuses_a_value_it_would_store_as_absent() -> None:
    """The staging rows are fixed-width, absent counts travel as -1: a real -1 must never become 'absent'."""
    from portal.usage import store

    row = store.StagedBatch(
        [T0], [b"k" * 32], [1], [10], [100], [1], [1], [None], [None], [5], [200], [12], [3], [10], [0], [0], [4],
        [None], [None], {},
    )  # fmt: skip
    assert store._copy_data(row).startswith(b"PGCOPY\n\xff\r\n\x00")
    with pytest.raises(ValueError, match="stored as absent"):
        store._copy_data(row._replace(output_tokens=[-1]))
