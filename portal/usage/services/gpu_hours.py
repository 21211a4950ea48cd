"""GPU-hours of self-hosted deployments: the replica change log integrated per UTC hour and priced per pool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

from django.db import connection, transaction

from portal.deployments import selectors as deployment_selectors
from portal.usage import selectors
from portal.usage.models import GpuAccrualCursor, GpuUsage

if TYPE_CHECKING:  # types only: the replica change log is read through deployments' selectors
    from portal.deployments.models import ReplicaObservation


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


GPU_HOURS_PLACES = Decimal("0.000000001")
MONEY_PLACES = Decimal("0.000000000001")

# What one new GpuUsage row adds to its day's GpuUsageDaily bucket (created at its first row). The accrual holds the
# deployment's cursor lock, and the bucket key holds the deployment, so two runs never add to one bucket at once.
_DAILY_ADD_SQL = """
INSERT INTO usage_gpu_daily (day, deployment_id, deployment_name, team_id, cluster_name, accelerator_type, gpu_hours, cost)
VALUES ((%s::timestamptz AT TIME ZONE 'UTC')::date, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, deployment_id, team_id, deployment_name, cluster_name, accelerator_type) DO UPDATE SET
    gpu_hours = usage_gpu_daily.gpu_hours + EXCLUDED.gpu_hours,
    cost = usage_gpu_daily.cost + EXCLUDED.cost
"""

# And to its team's day (portal.usage.models.UsageTeamDaily). Deployments of one team accrue in separate
# transactions, each adding to that team's days in ascending order, so they may wait on each other but never deadlock.
_TEAM_DAILY_ADD_SQL = """
INSERT INTO usage_team_daily (team_id, day, gpu_hours, gpu_cost, requests, failed_requests, unmetered_requests,
    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
VALUES (%s, (%s::timestamptz AT TIME ZONE 'UTC')::date, %s, %s, 0, 0, 0, 0, 0, 0, 0, 0, 0)
ON CONFLICT (team_id, day) DO UPDATE SET
    gpu_hours = usage_team_daily.gpu_hours + EXCLUDED.gpu_hours,
    gpu_cost = usage_team_daily.gpu_cost + EXCLUDED.gpu_cost
"""


def _hour_pieces(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    pieces = []
    cursor = start
    while cursor < end:
        boundary = _hour(cursor) + timedelta(hours=1)
        piece_end = min(boundary, end)
        pieces.append((cursor, piece_end))
        cursor = piece_end
    return pieces


def gpu_usage_accrue(*, now: datetime | None = None) -> int:
    """Accrue GPU-hours of self-hosted deployments up to `now`: the integral of the replicas the reconciler observed
    (deployments.ReplicaObservation, a change log: decode replicas x their GPUs, plus llm-d's prefill replicas x
    theirs) x the pool's hourly price, split at each
    change and each UTC hour. A deployment is charged from its first observed replica, for every change between
    runs, and until it is gone. Exactly once: a cursor per deployment is locked and advanced in the same
    transaction as the rows it adds, and each row added is added to its day's GpuUsageDaily in that transaction too.
    Returns the GpuUsage rows written."""
    now = now or datetime.now(UTC)
    prices = selectors.pool_prices()
    written = 0
    for deployment_id in selectors.gpu_accrual_due():
        with transaction.atomic():
            first = deployment_selectors.replica_observation_at(deployment_id=deployment_id)
            if first is None or first.observed_at >= now:
                continue
            cursor, _ = GpuAccrualCursor.objects.select_for_update().get_or_create(
                deployment_id=deployment_id,
                defaults={
                    "sampled_at": first.observed_at,
                    "observed_replicas": first.replicas + first.prefill_replicas,
                },
            )
            current = deployment_selectors.replica_observation_at(deployment_id=deployment_id, at=cursor.sampled_at)
            if cursor.sampled_at >= now or current is None:
                continue
            start = cursor.sampled_at
            for change in deployment_selectors.replica_observations(
                deployment_id=deployment_id, after=start, until=now
            ):
                written += _charge_gpus(current, start, change.observed_at, prices)
                current, start = change, change.observed_at
            written += _charge_gpus(current, start, now, prices)
            # The replicas holding GPUs when accrual stopped, prefill ones included: a deployment with any is due
            # again at the next run (usage.selectors.gpu_accrual_due).
            cursor.sampled_at, cursor.observed_replicas = now, current.replicas + current.prefill_replicas
            cursor.save(update_fields=["sampled_at", "observed_replicas"])
    return written


def _charge_gpus(
    deployment: ReplicaObservation,
    start: datetime,
    end: datetime,
    prices: dict[tuple[int, str], Decimal],
) -> int:
    """One GpuUsage row per UTC hour of [start, end) at what `deployment` observed, each added to its day's rollup;
    none when nothing ran. A row already written (the same deployment and start) is neither written nor added again.

    The GPUs charged are the decode replicas' and, with llm-d's prefill/decode disaggregation, the prefill replicas'
    each at their own GPUs per replica (ReplicaObservation.gpus). One row carries both (a GpuUsage row is one per
    deployment and start): its `replicas` counts every GPU-holding replica, its `gpus_per_replica` is the decode
    replicas', and its GPU-hours are exact for both."""
    gpus = deployment.gpus
    if not gpus or end <= start:
        return 0
    replicas = deployment.replicas + deployment.prefill_replicas
    price = prices.get((deployment.cluster_id, deployment.accelerator_type), Decimal(0))
    written = 0
    for piece_start, piece_end in _hour_pieces(start, end):
        seconds = Decimal((piece_end - piece_start) // timedelta(microseconds=1)) / Decimal(3_600_000_000)
        gpu_hours = (seconds * gpus).quantize(GPU_HOURS_PLACES, rounding=ROUND_HALF_EVEN)
        row, created = GpuUsage.objects.get_or_create(
            deployment_id=deployment.deployment_id,
            started_at=piece_start,
            defaults={
                "deployment_name": deployment.deployment_name,
                "team_id": deployment.team_id,
                "cluster_name": deployment.cluster_name,
                "accelerator_type": deployment.accelerator_type,
                "ended_at": piece_end,
                "replicas": replicas,
                "gpus_per_replica": deployment.gpus_per_replica,
                "gpu_hours": gpu_hours,
                "price_per_gpu_hour": price,
                "cost": (gpu_hours * price).quantize(MONEY_PLACES),
            },
        )
        if created:
            _daily_add(row)
        written += created
    return written


def _daily_add(row: GpuUsage) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _DAILY_ADD_SQL,
            [
                row.started_at,
                row.deployment_id,
                row.deployment_name,
                row.team_id,
                row.cluster_name,
                row.accelerator_type,
                row.gpu_hours,
                row.cost,
            ],
        )
        cursor.execute(_TEAM_DAILY_ADD_SQL, [row.team_id, row.started_at, row.gpu_hours, row.cost])
