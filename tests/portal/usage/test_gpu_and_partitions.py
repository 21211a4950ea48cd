"""GPU-hours of self-hosted deployments beside token cost, and monthly partitions created ahead and on demand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from portal.deployments.contracts import ObservedStatus
from portal.deployments.models import Deployment, ReplicaObservation
from portal.deployments.services import deployment_finalize, deployment_status_record
from portal.usage import partitions, services
from portal.usage.models import GpuUsage
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory
from tests.portal.usage.conftest import UsageWorld

pytestmark = pytest.mark.django_db


def _deployment(world: UsageWorld, *, gpus: int = 2) -> Deployment:
    pool = AcceleratorPoolFactory(accelerator_type="nvidia-l4", hourly_price_per_gpu=Decimal("0.8000"))
    version = SelfHostedVersionFactory(gpus_per_replica=gpus)
    return Deployment.objects.create(
        team=world.team,
        name="chat",
        model_version=version,
        cluster=pool.cluster,
        accelerator_type="nvidia-l4",
        served_model_name="chat",
        gpus_per_replica=gpus,
        phase="Provisioning",
    )


def _observe(deployment: Deployment, replicas: int, at: datetime) -> None:
    """What the reconciler records when it sees the predictor pods (the only writer of observed replicas)."""
    status = ObservedStatus(
        phase="Ready" if replicas else "Provisioning",
        conditions=(),
        message="",
        endpoint="",
        observed_replicas=replicas,
    )
    assert deployment_status_record(
        deployment_id=deployment.pk, generation=deployment.generation, status=status, reconciled_at=at
    )


def test_gpu_hours_accrue_per_hour_from_the_moment_replicas_are_observed(world: UsageWorld) -> None:
    deployment = _deployment(world)
    start = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=3)
    _observe(deployment, 3, start)
    assert services.gpu_usage_accrue(now=start + timedelta(minutes=90)) == 2  # split at the hour
    assert services.gpu_usage_accrue(now=start + timedelta(minutes=90)) == 0  # nothing new: exactly once
    rows = list(GpuUsage.objects.order_by("started_at"))
    assert [(row.started_at, row.ended_at) for row in rows] == [
        (start, start + timedelta(minutes=30)),
        (start + timedelta(minutes=30), start + timedelta(minutes=90)),
    ]
    assert [row.gpu_hours for row in rows] == [Decimal("3"), Decimal("6")]  # 3 replicas x 2 GPUs
    assert sum(row.cost for row in rows) == Decimal("7.2")  # 9 GPU-hours x 0.80
    # Scaled to zero 10 minutes into the next run's interval: charged exactly up to then, then nothing.
    _observe(deployment, 0, start + timedelta(minutes=100))
    services.gpu_usage_accrue(now=start + timedelta(minutes=120))
    services.gpu_usage_accrue(now=start + timedelta(minutes=150))
    assert sum(row.gpu_hours for row in GpuUsage.objects.all()) == Decimal("10")  # 9 + 3 x 2 x 10 minutes
    # Idle at zero since its last accrual, then scaled up again: the change after the cursor makes it due.
    _observe(deployment, 1, start + timedelta(minutes=160))
    services.gpu_usage_accrue(now=start + timedelta(minutes=175))
    assert sum(row.gpu_hours for row in GpuUsage.objects.all()) == Decimal("10.5")  # + 1 x 2 x 15 minutes


def test_a_deployment_that_lived_minutes_between_two_accruals_is_charged_exactly(world: UsageWorld) -> None:
    deployment = _deployment(world, gpus=1)
    start = datetime.now(UTC) - timedelta(minutes=4)
    services.gpu_usage_accrue(now=start)  # a run before it had any replica
    _observe(deployment, 2, start + timedelta(minutes=1))
    _observe(deployment, 4, start + timedelta(minutes=2))  # scaled up between runs
    Deployment.objects.filter(pk=deployment.pk).update(phase="Deleting")
    deployment.refresh_from_db()
    with transaction.atomic():
        assert deployment_finalize(deployment_id=deployment.pk, generation=deployment.generation)
    gone_at = ReplicaObservation.objects.filter(deployment_id=deployment.pk, replicas=0).get().observed_at
    services.gpu_usage_accrue(now=gone_at + timedelta(minutes=5))
    assert services.gpu_usage_accrue(now=gone_at + timedelta(minutes=10)) == 0  # gone: nothing more
    hour = Decimal(3600)
    expected = 2 * Decimal(60) / hour + 4 * Decimal((gone_at - start - timedelta(minutes=2)).total_seconds()) / hour
    charged = sum(row.gpu_hours for row in GpuUsage.objects.filter(deployment_id=deployment.pk))
    assert abs(charged - expected) < Decimal("0.00000001")
    assert charged > Decimal("0.1")  # more than the 2 replicas' first minute: the 4 were charged until gone


def test_gpu_cost_is_reported_beside_token_cost(world: UsageWorld, rollups) -> None:
    deployment = _deployment(world, gpus=1)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    _observe(deployment, 1, start)
    services.gpu_usage_accrue(now=start + timedelta(hours=1))
    world.post([world.event(input_tokens=1_000_000, output_tokens=0)])
    rollups()
    today = datetime.now(UTC).date()
    body = (
        world.matrix.client("viewer")
        .get("/api/v1/teams/alpha/costs", {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()})
        .json()
    )
    assert body["totals"]["gpu_hours"] == "1.00"
    assert body["totals"]["gpu_cost"] == "0.80"
    assert body["totals"]["token_cost"] == "2.50"
    assert body["totals"]["total_cost"] == "3.30"
    assert body["gpu"] == [
        {
            "team": "alpha",
            "deployment": "chat",
            "cluster": body["gpu"][0]["cluster"],
            "accelerator_type": "nvidia-l4",
            "gpu_hours": "1.00",
            "cost": "0.80",
        }
    ]


def test_partitions_are_created_ahead() -> None:
    created = partitions.partitions_ensure_ahead(today=datetime(2031, 5, 17, tzinfo=UTC).date(), months_ahead=2)
    assert created == ["usage_event_2031_04", "usage_event_2031_05", "usage_event_2031_06", "usage_event_2031_07"]
    assert partitions.partitions_ensure_ahead(today=datetime(2031, 5, 17, tzinfo=UTC).date(), months_ahead=2) == []
    assert "usage_event_2031_07" in partitions.partition_list()


def test_a_late_event_gets_its_partition_on_demand(world: UsageWorld, settings) -> None:
    settings.USAGE_MAX_EVENT_AGE_DAYS = 3660
    at = datetime(2025, 2, 10, 12, tzinfo=UTC)
    assert "usage_event_2025_02" not in partitions.partition_list()
    body = world.post([world.event(at=at)]).json()
    assert body["accepted"] == 1
    assert "usage_event_2025_02" in partitions.partition_list()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_event_2025_02")
        assert cursor.fetchone()[0] == 1


def test_a_batch_across_a_month_boundary_lands_in_both_months_and_a_replay_of_it_counts_once(
    world: UsageWorld, settings
) -> None:
    """A batch inside one month is inserted into that month's partition directly; one across the boundary goes
    through the partitioned table, each row to its month, with the same exactly-once answer."""
    settings.USAGE_MAX_EVENT_AGE_DAYS = 3660
    late, early = datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC), datetime(2025, 4, 1, 0, 0, 1, tzinfo=UTC)
    batch = [world.event(at=late), world.event(at=early), world.event(at=early)]
    assert world.post(batch).json()["accepted"] == 3
    replay = world.post(batch).json()
    assert (replay["accepted"], replay["duplicates"]) == (0, 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM usage_event_2025_03), (SELECT count(*) FROM usage_event_2025_04)")
        assert cursor.fetchone() == (1, 2)
    one_month = [world.event(at=early), world.event(at=early)]
    assert world.post(one_month).json()["accepted"] == 2
    assert world.post(one_month).json()["duplicates"] == 2


def test_partitions_past_retention_are_dropped_whole() -> None:
    partitions.partition_ensure(datetime(2024, 1, 1, tzinfo=UTC).date())
    partitions.partition_ensure(datetime(2024, 2, 1, tzinfo=UTC).date())
    dropped = partitions.partitions_drop_older_than(today=datetime(2025, 2, 10, tzinfo=UTC).date(), months=13)
    assert dropped == ["usage_event_2024_01"]
    assert "usage_event_2024_02" in partitions.partition_list()
    assert "usage_event_2024_01" not in partitions.partition_list()


def test_collectors_are_bound_to_sources_by_command(world: UsageWorld) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    from portal.usage.models import CollectorSource
    from tests.portal.usage.conftest import collector_client

    _, token_id = collector_client(prefixes=())
    out = StringIO()
    call_command("bind_usage_source", str(token_id), "aigw://prod-eu1/", stdout=out)
    assert "aigw://prod-eu1/" in out.getvalue()
    assert CollectorSource.objects.filter(token_id=token_id, source_prefix="aigw://prod-eu1/").exists()
    with pytest.raises(CommandError):
        call_command("bind_usage_source", "999999", "aigw://x/")
