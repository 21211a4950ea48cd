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
