"""The daily GPU rollup: kept in the accrual's transaction, equal to the accrual it sums, backfilled by its migration,
and what the cost reports read over days."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from portal.deployments.models import Deployment
from portal.usage import selectors, services
from portal.usage.models import GpuAccrualCursor, GpuUsage, GpuUsageDaily
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory
from tests.portal.usage.conftest import UsageWorld
from tests.portal.usage.test_gpu_and_partitions import _observe

pytestmark = pytest.mark.django_db

Bucket = tuple[date, int, str, int, str, str]


def _deployment(world: UsageWorld, *, name: str, gpus: int, price: str) -> Deployment:
    pool = AcceleratorPoolFactory(accelerator_type="nvidia-l4", hourly_price_per_gpu=Decimal(price))
    return Deployment.objects.create(
        team=world.team,
        name=name,
        model_version=SelfHostedVersionFactory(gpus_per_replica=gpus),
        cluster=pool.cluster,
        accelerator_type="nvidia-l4",
        served_model_name=name,
        gpus_per_replica=gpus,
        phase="Provisioning",
    )


def _accrual_by_day() -> dict[Bucket, tuple[Decimal, Decimal]]:
    """The accrual summed per UTC day and bucket, in Python from every GpuUsage row."""
    sums: dict[Bucket, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in GpuUsage.objects.all():
        key = (
            row.started_at.astimezone(UTC).date(),
            row.deployment_id,
            row.deployment_name,
            row.team_id,
            row.cluster_name,
            row.accelerator_type,
        )
        sums[key][0] += row.gpu_hours
        sums[key][1] += row.cost
    return {key: (hours, cost) for key, (hours, cost) in sums.items()}


def _rollup() -> dict[Bucket, tuple[Decimal, Decimal]]:
    return {
        (row.day, row.deployment_id, row.deployment_name, row.team_id, row.cluster_name, row.accelerator_type): (
            row.gpu_hours,
            row.cost,
        )
        for row in GpuUsageDaily.objects.all()
    }


def test_the_daily_rollup_is_the_sum_of_the_accrual_across_midnight_and_reruns(world: UsageWorld) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(hours=2, minutes=17)  # yesterday 21:43
    chat = _deployment(world, name="chat", gpus=2, price="0.8000")
    batch = _deployment(world, name="batch", gpus=1, price="2.4567")
    _observe(chat, 3, start)
    _observe(batch, 1, start + timedelta(minutes=7))
    services.gpu_usage_accrue(now=start + timedelta(minutes=50))
    _observe(chat, 1, start + timedelta(minutes=95, seconds=13))
    services.gpu_usage_accrue(now=start + timedelta(minutes=140))
    # A re-run of the window just accrued (its cursors put back where the previous run left them): the rows exist,
    # so nothing is written and nothing is added to the rollup a second time.
    before = _rollup()
    GpuAccrualCursor.objects.update(sampled_at=start + timedelta(minutes=50), observed_replicas=3)
    GpuAccrualCursor.objects.filter(deployment_id=batch.pk).update(observed_replicas=1)
    assert services.gpu_usage_accrue(now=start + timedelta(minutes=140)) == 0
    assert _rollup() == before
    _observe(batch, 0, start + timedelta(minutes=150))
    services.gpu_usage_accrue(now=start + timedelta(minutes=163))
    services.gpu_usage_accrue(now=start + timedelta(minutes=163))  # the same moment again: nothing new

    rollup = _rollup()
    assert rollup == _accrual_by_day()
    assert {key[0] for key in rollup} == {midnight.date() - timedelta(days=1), midnight.date()}
    assert len(rollup) == 4  # two deployments on two days
    # chat before midnight (137 minutes): 3 replicas x 2 GPUs for 95m13s, then 1 x 2 for the rest.
    chat_yesterday = rollup[(midnight.date() - timedelta(days=1), chat.pk, "chat", world.team.pk, *_pool(chat))]
    expected_hours = Decimal(6 * (95 * 60 + 13) + 2 * (137 * 60 - 95 * 60 - 13)) / 3600
    assert abs(chat_yesterday[0] - expected_hours) < Decimal("0.00000001")
    assert abs(chat_yesterday[1] - expected_hours * Decimal("0.8")) < Decimal("0.00000001")


def _pool(deployment: Deployment) -> tuple[str, str]:
    return deployment.cluster.name, deployment.accelerator_type


def test_cost_reports_over_days_read_the_rollup(world: UsageWorld) -> None:
    """What the cost API and the console read is the rollup: a report equals the accrual it sums, and a GpuUsage row
    written behind the accrual's back (never added to the rollup) does not show."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    chat = _deployment(world, name="chat", gpus=1, price="0.8000")
    _observe(chat, 2, midnight - timedelta(hours=1))
    services.gpu_usage_accrue(now=midnight + timedelta(minutes=30))  # 2 GPU-h yesterday, 1 GPU-h today
    today = midnight.date()
    yesterday = today - timedelta(days=1)
    body = (
        world.matrix.client("viewer")
        .get("/api/v1/teams/alpha/costs", {"from": yesterday.isoformat(), "to": today.isoformat(), "group_by": "day"})
        .json()
    )
    assert [(row["day"], row["gpu_hours"], row["gpu_cost"]) for row in body["series"]] == [
        (yesterday.isoformat(), "2.00", "1.60"),
        (today.isoformat(), "1.00", "0.80"),
    ]
    assert selectors.deployment_gpu_by_day(deployment_id=chat.pk, start=yesterday, end=today) == [
        {"day": yesterday, "gpu_hours": Decimal("2"), "cost": Decimal("1.6")},
        {"day": today, "gpu_hours": Decimal("1"), "cost": Decimal("0.8")},
    ]
    GpuUsage.objects.create(
        deployment_id=chat.pk,
        deployment_name="chat",
        team=world.team,
        cluster_name=chat.cluster.name,
        accelerator_type="nvidia-l4",
        started_at=midnight - timedelta(hours=5),
        ended_at=midnight - timedelta(hours=4),
        replicas=1,
        gpus_per_replica=1,
        gpu_hours=Decimal("1"),
        price_per_gpu_hour=Decimal("0.8000"),
        cost=Decimal("0.8"),
    )
    totals = selectors.cost_totals(team_ids=[world.team.pk], start=yesterday, end=today)
    assert (totals["gpu_hours"], totals["gpu_cost"]) == (Decimal("3"), Decimal("2.4"))


def test_the_migration_backfills_the_rollup_from_the_accrual(world: UsageWorld) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    chat = _deployment(world, name="chat", gpus=2, price="0.8000")
    batch = _deployment(world, name="batch", gpus=1, price="1.1111")
    _observe(chat, 1, midnight - timedelta(hours=30, minutes=20))
    _observe(batch, 3, midnight - timedelta(minutes=41))
    services.gpu_usage_accrue(now=midnight + timedelta(hours=2, minutes=9))
    accrued = _accrual_by_day()
    assert len(accrued) == 5  # chat over three days, batch over two

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction: check its foreign keys before DDL
    executor = MigrationExecutor(connection)
    executor.migrate([("usage", "0010_console_read_indexes")])  # before the rollup: its table is gone
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('usage_gpu_daily')")
        assert cursor.fetchone() == (None,)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([("usage", "0011_gpu_daily_rollup")])

    assert _rollup() == accrued
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("usage"))  # the later usage migrations, as the test began
    # And the accrual keeps adding to what the backfill wrote.
    services.gpu_usage_accrue(now=midnight + timedelta(hours=3))
    assert _rollup() == _accrual_by_day()
