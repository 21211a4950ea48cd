"""The coarse rollups (one row per team and day, one per model and day): kept by the compactor and the GPU accrual in
the transactions that write the daily rollups, always their exact sums, and backfilled by their migration."""

from __future__ import annotations

import importlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from portal.usage import selectors, services
from portal.usage.models import GpuUsageDaily, UsageDaily, UsageModelDaily, UsageTeamDaily
from tests.portal.usage.conftest import UsageWorld
from tests.portal.usage.test_gpu_and_partitions import _observe
from tests.portal.usage.test_gpu_daily import _deployment

pytestmark = pytest.mark.django_db

SUMMED = (
    "requests",
    "failed_requests",
    "unmetered_requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
)


def _summed(rows: Any, key: Any, columns: tuple[str, ...]) -> dict[Any, tuple[Any, ...]]:
    sums: dict[Any, list[Any]] = defaultdict(lambda: [0] * len(columns))
    for row in rows:
        for offset, column in enumerate(columns):
            sums[key(row)][offset] += getattr(row, column)
    return {bucket: tuple(values) for bucket, values in sums.items()}


def _expected() -> tuple[dict[Any, tuple[Any, ...]], dict[Any, tuple[Any, ...]]]:
    """What the coarse rollups must hold: the daily rollups summed in Python."""
    team_days = _summed(UsageDaily.objects.all(), lambda row: (row.team_id, row.day), SUMMED)
    gpu = _summed(GpuUsageDaily.objects.all(), lambda row: (row.team_id, row.day), ("gpu_hours", "cost"))
    zero_tokens = (0,) * len(SUMMED)
    teams = {
        bucket: (*team_days.get(bucket, zero_tokens), *gpu.get(bucket, (0, 0))) for bucket in set(team_days) | set(gpu)
    }
    models = _summed(UsageDaily.objects.all(), lambda row: (row.model_slug, row.day), SUMMED)
    return teams, models


def _stored() -> tuple[dict[Any, tuple[Any, ...]], dict[Any, tuple[Any, ...]]]:
    teams = {
        (row.team_id, row.day): tuple(getattr(row, column) for column in (*SUMMED, "gpu_hours", "gpu_cost"))
        for row in UsageTeamDaily.objects.all()
    }
    models = {
        (row.model_slug, row.day): tuple(getattr(row, column) for column in SUMMED)
        for row in UsageModelDaily.objects.all()
    }
    return teams, models


def test_the_coarse_rollups_are_the_sums_of_the_daily_rollups_and_their_migration_backfills_them(
    world: UsageWorld, rollups
) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday, before = midnight.date() - timedelta(days=1), midnight.date() - timedelta(days=2)
    world.post(
        [
            world.event(at=midnight - timedelta(hours=3), input_tokens=1000, output_tokens=100),
            world.event(at=midnight - timedelta(hours=3, minutes=1), input_tokens=None, output_tokens=None),
            world.event(at=midnight - timedelta(hours=27), input_tokens=700, output_tokens=70),
            world.event(at=midnight - timedelta(hours=2), client_id=world.other_client_id, input_tokens=50),
        ]
    )
    rollups()
    world.post([world.event(at=midnight - timedelta(hours=27, minutes=1), input_tokens=300, output_tokens=30)])
    rollups()  # a late event adds to a day already rolled up
    chat = _deployment(world, name="chat", gpus=2, price="0.8000")
    _observe(chat, 1, midnight - timedelta(hours=25, minutes=30))
    services.gpu_usage_accrue(now=midnight - timedelta(hours=23, minutes=40))

    teams, models = _stored()
    assert (teams, models) == _expected()
    assert teams[(world.team.pk, before)][0] == 2  # the late event is in its day
    assert teams[(world.matrix.other_team.pk, yesterday)][-2:] == (0, 0)  # no GPU
    assert {day for team, day in teams if team == world.team.pk} == {before, yesterday}
    # The reports over them answer what the daily rollups would: the GPU hours count, the requests add up.
    totals = selectors.cost_totals(team_ids=None, start=before, end=yesterday)
    assert (totals["requests"], totals["gpu_hours"]) == (5, Decimal("3.666666667"))  # 2 GPUs x (1h30 + 20 min)

    # The console's stack: the teams named, and every other team summed per day as one row (team None).
    stack = selectors.cost_by_day_and_team(team_ids=None, start=before, end=yesterday, teams=["beta"])
    by_team = selectors.cost_by_day_and_team(team_ids=None, start=before, end=yesterday)
    assert [(row["day"], row["team"]) for row in stack] == [(before, None), (yesterday, "beta"), (yesterday, None)]
    for day in (before, yesterday):
        assert sum(row["total_cost"] for row in stack if row["day"] == day) == sum(
            row["total_cost"] for row in by_team if row["day"] == day
        )

    # Migration 0014 computes the same rows from the daily rollups.
    UsageTeamDaily.objects.all().delete()
    UsageModelDaily.objects.all().delete()
    migration = importlib.import_module("portal.usage.migrations.0014_coarse_daily_rollups")
    with connection.cursor() as cursor:
        for sql in migration.BACKFILL_SQL:
            cursor.execute(sql)
    assert _stored() == (teams, models)


def test_the_fold_adds_random_deltas_into_every_rollup_as_their_definition_says(world: UsageWorld) -> None:
    """1,200 random deltas (ingest-like ones with histograms, re-rating ones carrying cost only, labels known or not,
    deployments or none, hours across two UTC days) folded in three runs onto rollups that already hold rows: each
    rollup table equals its definition computed here in Python from the same deltas."""
    import random
    from collections import defaultdict
    from decimal import Decimal

    from portal.usage.models import (
        LATENCY_BOUNDS_MS,
        UsageDaily,
        UsageHourly,
        UsageModelDaily,
        UsageRequestHealth,
        UsageRollupDelta,
        UsageTeamDaily,
    )
    from portal.usage.services import usage_rollups_compact

    rng = random.Random(1612)
    buckets = len(LATENCY_BOUNDS_MS) + 1
    team = world.team.pk
    start = datetime(2026, 12, 3, 20, tzinfo=UTC)
    sums = ("requests", "failed_requests", "unmetered_requests", "input_tokens", "cached_input_tokens",
            "cache_write_tokens", "output_tokens", "reasoning_tokens")  # fmt: skip
    expected: dict[str, dict[tuple[object, ...], dict[str, object]]] = defaultdict(dict)

    def add(table: str, key: tuple[object, ...], values: dict[str, object]) -> None:
        row = expected[table].setdefault(key, {})
        for name, value in values.items():
            if name in ("model_slug", "client_id"):
                row[name] = value or row.get(name, "")
            elif name in ("latency_buckets", "ttft_buckets"):
                row[name] = [a + b for a, b in zip(row.get(name, [0] * buckets), value or [0] * buckets, strict=True)]
            else:
                row[name] = row.get(name, 0) + value  # type: ignore[operator]

    for _ in range(3):
        deltas = []
        for _delta in range(400):
            rerating = rng.random() < 0.2
            hour = start + timedelta(hours=rng.randrange(8))
            model, credential = rng.choice([(1, 11), (1, 12), (2, 11), (3, 13)])
            values = {name: 0 if rerating else rng.randrange(0, 50) for name in sums}
            delta = UsageRollupDelta(
                hour=hour, team_id=team, model_id=model, credential_id=credential,
                deployment_id=rng.choice([None, None, 7]),
                model_slug="" if rerating or rng.random() < 0.3 else f"model-{model}",
                client_id="" if rerating or rng.random() < 0.3 else f"client-{credential}",
                cost_pico=rng.randrange(-10**9, 10**13) if rerating else rng.randrange(0, 10**13),
                last_event_at=None if rerating else hour + timedelta(minutes=rng.randrange(60)),
                latency_buckets=None if rerating else [rng.randrange(5) for _ in range(buckets)],
                ttft_buckets=None if rerating or rng.random() < 0.5 else [rng.randrange(5) for _ in range(buckets)],
                **values,
            )  # fmt: skip
            deltas.append(delta)
            cost = Decimal(delta.cost_pico).scaleb(-12)
            labels = {"model_slug": delta.model_slug, "client_id": delta.client_id}
            day = hour.date()
            add("hourly", (hour, model, credential), {**values, "cost": cost, **labels})
            add("daily", (day, model, credential), {**values, "cost": cost, **labels})
            add("team_daily", (day,), {**values, "cost": cost})
            add("model_daily", (day, model), {**values, "cost": cost, "model_slug": delta.model_slug})
            if not rerating:
                add(
                    "health",
                    (hour, model, delta.deployment_id or 0),
                    {"requests": values["requests"], "errors": values["failed_requests"],
                     "latency_buckets": delta.latency_buckets, "ttft_buckets": delta.ttft_buckets,
                     "model_slug": delta.model_slug},
                )  # fmt: skip
        UsageRollupDelta.objects.bulk_create(deltas)
        assert usage_rollups_compact(batch_size=150) == 400

    def actual(model: type, key: tuple[str, ...], columns: tuple[str, ...]) -> dict[tuple[object, ...], dict]:
        return {
            tuple(row[name] for name in key): {name: row[name] for name in columns}
            for row in model.objects.filter(team_id=team).values(*key, *columns)
        }

    assert (
        actual(UsageHourly, ("hour", "model_id", "credential_id"), (*sums, "cost", "model_slug", "client_id"))
        == (expected["hourly"])
    )
    assert (
        actual(UsageDaily, ("day", "model_id", "credential_id"), (*sums, "cost", "model_slug", "client_id"))
        == (expected["daily"])
    )
    assert actual(UsageTeamDaily, ("day",), (*sums, "cost")) == expected["team_daily"]
    model_daily = {
        (row["day"], row["model_id"]): {name: row[name] for name in (*sums, "cost", "model_slug")}
        for row in UsageModelDaily.objects.values("day", "model_id", *sums, "cost", "model_slug")
    }
    assert model_daily == expected["model_daily"]
    health_columns = ("requests", "errors", "latency_buckets", "ttft_buckets", "model_slug")
    assert actual(UsageRequestHealth, ("hour", "model_id", "deployment_id"), health_columns) == expected["health"]
