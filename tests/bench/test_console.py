"""The console's pages at company scale: 100 teams, 1,000 deployments and 10 million usage events, each page's
server time printed (target: under 200 ms). Run with `make bench`; it prints figures, it asserts no timing.

Volume is seeded straight into the tables the pages read, in SQL (generate_series), because pushing 10 million events
through ingestion would take hours here: the daily rollups carry 10,000,000 requests (100 teams x 10 models x 3 keys x
92 days), GPU accrual has one row per deployment and hour over the same 92 days (about 2.2 million rows, the
accrual's own granularity) and its daily rollup (one row per deployment and day, the sum of that day's accrual rows,
as the accrual keeps it), and the coarse rollups over both (one row per team and day, one per model and day), as the rollup and accrual jobs
would leave them. Raw events are not seeded unless
PORTAL_BENCH_RAW_EVENTS says how many: the pages read rollups, never raw events (the quarantine count reads only
the quarantined events' partial index)."""

from __future__ import annotations

import importlib
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from catalog.models import CatalogModel
from portal.clusters.models import AcceleratorPool, Cluster
from portal.deployments.models import Deployment
from portal.tenancy.models import Membership, Role, Team, TeamGpuQuota, TeamQuota, User
from portal.usage.models import GpuUsage, GpuUsageDaily, UsageDaily
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory

TEAMS = 100
DEPLOYMENTS = 1_000
MODELS = 10
KEYS_PER_TEAM = 3
DAYS = 92
EVENTS = 10_000_000
ROUNDS = int(os.environ.get("PORTAL_BENCH_ROUNDS", "15"))


def _slowest_queries(client: Client, path: str, count: int = 4) -> str:
    """Where one request's time goes: its query count and slowest statements (printed beside the figures)."""
    timings: list[tuple[float, str]] = []

    def timed(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.append(((time.perf_counter() - started) * 1000, " ".join(sql.split())[:110]))

    with connection.execute_wrapper(timed):
        client.get(path)
    timings.sort(reverse=True)
    slowest = "; ".join(f"{ms:.0f} ms {sql}" for ms, sql in timings[:count])
    return f"{len(timings)} queries, {sum(ms for ms, _ in timings):.0f} ms in SQL; slowest: {slowest}"


def _measure(label: str, client: Client, path: str) -> float:
    for _ in range(2):
        assert client.get(path).status_code == 200, path
    if os.environ.get("PORTAL_BENCH_QUERIES"):
        print(f"\n  {label}: {_slowest_queries(client, path)}")
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    samples.sort()
    median = statistics.median(samples)
    print(
        f"\n{label:<44} {path:<58} median {median:7.1f} ms  p95 {samples[int(len(samples) * 0.95) - 1]:7.1f} ms"
        f"  ({ROUNDS} requests, in-process client, {len(response.content) // 1024} KiB)"
    )
    return median


def _seed() -> dict[str, str]:
    today = datetime.now(UTC).date()
    first_day = today - timedelta(days=DAYS - 1)
    clusters = [
        Cluster.objects.get(pk=AcceleratorPoolFactory(cluster__name=f"gpu-{index}", gpu_count=4_000).cluster_id)
        for index in range(3)
    ]
    for cluster in clusters:
        AcceleratorPool.objects.create(
            cluster=cluster,
            accelerator_type="nvidia-h100-80gb",
            gpu_product="NVIDIA-H100-80GB-HBM3",
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            tolerations=[],
            gpu_count=2_000,
            gpu_memory_gb=80,
            hourly_price_per_gpu=Decimal("4.0000"),
        )
    versions = [SelfHostedVersionFactory(model__slug=f"model-{index}", version="v1") for index in range(MODELS)]
    teams = Team.objects.bulk_create(
        Team(slug=f"team-{index:03d}", display_name=f"Team {index:03d}") for index in range(TEAMS)
    )
    TeamQuota.objects.bulk_create(
        TeamQuota(
            team=team,
            max_deployments=50,
            tokens_per_minute=100_000,
            tokens_per_day=10_000_000,
            monthly_budget=Decimal(1_000 + 500 * (index % 7)),
            budget_policy="alert",
        )
        for index, team in enumerate(teams)
    )
    TeamGpuQuota.objects.bulk_create(
        TeamGpuQuota(quota=quota, accelerator_type="nvidia-l4", gpus=40) for quota in TeamQuota.objects.all()
    )
    member = User.objects.create(username="member")
    Membership.objects.create(team=teams[0], user=member, role=Role.ADMIN)
    User.objects.create(username="staff", is_staff=True)
    phases = ["Ready"] * 18 + ["Provisioning", "Failed"]
    Deployment.objects.bulk_create(
        Deployment(
            team=teams[index % TEAMS],
            name=f"deployment-{index:04d}",
            model_version=versions[index % MODELS],
            cluster=clusters[index % len(clusters)],
            accelerator_type="nvidia-l4",
            served_model_name=f"served-{index:04d}",
            gpus_per_replica=1,
            min_replicas=1,
            max_replicas=2,
            observed_replicas=1,
            phase=phases[index % len(phases)],
            message="" if phases[index % len(phases)] == "Ready" else "waiting for the predictor",
            endpoint=f"https://gateway.example/served-{index:04d}",
        )
        for index in range(DEPLOYMENTS)
    )
    rows_per_day = TEAMS * MODELS * KEYS_PER_TEAM
    requests_per_row = EVENTS // (rows_per_day * DAYS)
    team_ids = [team.pk for team in teams]
    model_ids = [version.model_id for version in versions]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {UsageDaily._meta.db_table} (team_id, model_id, model_slug, credential_id, client_id, day,
                requests, failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens,
                output_tokens, reasoning_tokens, cost)
            SELECT (%s::bigint[])[t], (%s::bigint[])[m], 'model-' || (m - 1), t * 10 + k,
                   'team-' || lpad((t - 1)::text, 3, '0') || '.key' || k, %s::date + d,
                   %s + (CASE WHEN t = 1 AND m = 1 AND k = 1 AND d = 0 THEN %s ELSE 0 END), 1, 0,
                   1000 * %s, 0, 0, 200 * %s, 0, (%s * (0.0025 + 0.0001 * m))::numeric(20, 9)
            FROM generate_series(1, %s) t, generate_series(1, %s) m, generate_series(1, %s) k,
                 generate_series(0, %s) d
            """,
            [
                team_ids,
                model_ids,
                first_day,
                requests_per_row,
                EVENTS - requests_per_row * rows_per_day * DAYS,  # the remainder on one row: exactly 10,000,000
                requests_per_row,
                requests_per_row,
                requests_per_row,
                TEAMS,
                MODELS,
                KEYS_PER_TEAM,
                DAYS - 1,
            ],
        )
        cursor.execute(
            f"""
            INSERT INTO {GpuUsage._meta.db_table} (deployment_id, deployment_name, team_id, cluster_name,
                accelerator_type, started_at, ended_at, replicas, gpus_per_replica, gpu_hours, price_per_gpu_hour, cost)
            SELECT deployment.id, deployment.name, deployment.team_id, cluster.name, deployment.accelerator_type,
                   %s::timestamptz + make_interval(hours => h), %s::timestamptz + make_interval(hours => h + 1),
                   1, 1, 1, 0.8, 0.8
            FROM {Deployment._meta.db_table} deployment JOIN {Cluster._meta.db_table} cluster
                 ON cluster.id = deployment.cluster_id, generate_series(0, %s) h
            """,
            [
                datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC),
                datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC),
                (DAYS - 1) * 24 + datetime.now(UTC).hour - 1,
            ],
        )
        cursor.execute(
            f"""
            INSERT INTO {GpuUsageDaily._meta.db_table} (day, deployment_id, deployment_name, team_id, cluster_name,
                accelerator_type, gpu_hours, cost)
            SELECT (started_at AT TIME ZONE 'UTC')::date, deployment_id, deployment_name, team_id, cluster_name,
                   accelerator_type, sum(gpu_hours), sum(cost)
            FROM {GpuUsage._meta.db_table}
            GROUP BY 1, deployment_id, deployment_name, team_id, cluster_name, accelerator_type
            """
        )
        # The coarse rollups as the compactor and the accrual keep them: what migration 0012 backfills from the above.
        for sql in importlib.import_module("portal.usage.migrations.0014_coarse_daily_rollups").BACKFILL_SQL:
            cursor.execute(sql)
        cursor.execute("ANALYZE usage_team_daily")
        cursor.execute("ANALYZE usage_model_daily")
        cursor.execute(f"ANALYZE {UsageDaily._meta.db_table}")
        cursor.execute(f"ANALYZE {GpuUsage._meta.db_table}")
        cursor.execute(f"ANALYZE {GpuUsageDaily._meta.db_table}")
        raw = int(os.environ.get("PORTAL_BENCH_RAW_EVENTS", "0"))
        cursor.execute(f"SELECT sum(requests), count(*) FROM {UsageDaily._meta.db_table}")
        requests, daily_rows = cursor.fetchone()
        cursor.execute(f"SELECT count(*) FROM {GpuUsage._meta.db_table}")
        gpu_rows = cursor.fetchone()[0]
        cursor.execute(f"SELECT sum(gpu_hours), sum(cost), count(*) FROM {GpuUsageDaily._meta.db_table}")
        gpu_daily_hours, gpu_daily_cost, gpu_daily_rows = cursor.fetchone()
    assert requests == EVENTS
    assert (gpu_daily_hours, gpu_daily_cost) == (gpu_rows, gpu_rows * Decimal("0.8"))  # 1 GPU-h at 0.80 a row
    print(
        f"\nseeded: {TEAMS} teams, {Deployment.objects.count()} deployments, {requests:,} usage events in {daily_rows:,} "
        f"daily rollup rows over {DAYS} days, {gpu_rows:,} GPU accrual rows in {gpu_daily_rows:,} daily GPU rollup rows, "
        f"{raw:,} raw events"
    )
    assert CatalogModel.objects.count() == MODELS
    return {"team": teams[0].slug, "deployment": "deployment-0000", "model": "model-0"}


@pytest.mark.django_db
def test_bench_console_pages() -> None:
    started = time.perf_counter()
    seeded = _seed()
    print(f"seeding took {time.perf_counter() - started:.1f} s")
    staff = Client()
    staff.force_login(User.objects.get(username="staff"))
    member = Client()
    member.force_login(User.objects.get(username="member"))
    team, deployment, model = seeded["team"], seeded["deployment"], seeded["model"]
    today = datetime.now(UTC).date()
    quarter = f"?from={(today - timedelta(days=DAYS - 1)).isoformat()}&to={today.isoformat()}"
    figures = {
        "overview (month to date)": _measure("overview, platform admin", staff, "/console/"),
        "overview (92 days)": _measure("overview over 92 days", staff, f"/console/{quarter}"),
        "team": _measure("team page, its admin", member, f"/console/teams/{team}/"),
        "team (92 days)": _measure("team page over 92 days", member, f"/console/teams/{team}/{quarter}"),
        "deployment": _measure("deployment page", member, f"/console/teams/{team}/deployments/{deployment}/"),
        "model": _measure("model page, platform admin", staff, f"/console/models/{model}/"),
        "fleet": _measure("fleet", staff, "/console/fleet/"),
        "requests": _measure("request health", staff, "/console/requests/"),
    }
    print(
        "\nconsole pages, median server time: " + ", ".join(f"{name} {value:.0f} ms" for name, value in figures.items())
    )
