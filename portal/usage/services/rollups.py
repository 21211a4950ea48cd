"""Rollups: the compactor folds the deltas that ingestion, re-rating and quarantine release wrote into the hourly and
daily rollups, and advances each credential's "last used"."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from portal.gateway import services as gateway_services
from portal.usage import metrics
from portal.usage.models import LATENCY_BOUNDS_MS

logger = logging.getLogger(__name__)

# Exactly once, without a protocol of its own: a delta is written in the transaction that changed the raw events,
# and deleted in the transaction that adds it to the rollups. A compactor takes the oldest deltas with SKIP LOCKED
# (concurrent compactors take different ones), and if it dies its transaction rolls back and the deltas are taken
# by the next run; one stuck idle in its transaction is cut off by idle_in_transaction_session_timeout.
_TAKE_SQL = """
WITH taken AS (
    DELETE FROM usage_rollup_delta
    WHERE id IN (SELECT id FROM usage_rollup_delta ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING *
)
SELECT hour, team_id, model_id, credential_id, coalesce(deployment_id, 0), model_slug, client_id, requests,
    failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, cost_pico, last_event_at, latency_buckets, ttft_buckets
FROM taken
"""

_SUMMED = (
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
_ADD = ", ".join(f"{column} = {{table}}.{column} + EXCLUDED.{column}" for column in _SUMMED)
# A label is kept once known; a compensating delta (re-rating) carries none.
_LABELS = (
    "model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug ELSE {table}.model_slug END, "
    "client_id = CASE WHEN EXCLUDED.client_id <> '' THEN EXCLUDED.client_id ELSE {table}.client_id END"
)

# Rows arrive sorted by the unique key, so concurrent compactors lock rollup rows in one order (no deadlock).
_UPSERT_SQL = """
INSERT INTO {table} (team_id, {bucket}, model_id, credential_id, model_slug, client_id, requests, failed_requests,
    unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
SELECT * FROM unnest(%s::bigint[], %s::{bucket_type}[], %s::bigint[], %s::bigint[], %s::text[], %s::text[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::numeric[])
ON CONFLICT (team_id, {bucket}, model_id, credential_id) DO UPDATE SET {add}, {labels}
"""
_HOURLY_UPSERT_SQL = _UPSERT_SQL.format(
    table="usage_hourly",
    bucket="hour",
    bucket_type="timestamptz",
    add=_ADD.format(table="usage_hourly"),
    labels=_LABELS.format(table="usage_hourly"),
)
_DAILY_UPSERT_SQL = _UPSERT_SQL.format(
    table="usage_daily",
    bucket="day",
    bucket_type="date",
    add=_ADD.format(table="usage_daily"),
    labels=_LABELS.format(table="usage_daily"),
)
_COARSE_COLUMNS = ", ".join(_SUMMED)
_COARSE_ARRAYS = ", ".join(["%s::bigint[]"] * (len(_SUMMED) - 1) + ["%s::numeric[]"])
# The coarse rollups: one row per team and day, and one per model and day across teams (portal.usage.models).
_TEAM_DAILY_UPSERT_SQL = """
INSERT INTO usage_team_daily (team_id, day, {columns}, gpu_hours, gpu_cost)
SELECT *, 0, 0 FROM unnest(%s::bigint[], %s::date[], {arrays})
ON CONFLICT (team_id, day) DO UPDATE SET {add}
""".format(columns=_COARSE_COLUMNS, arrays=_COARSE_ARRAYS, add=_ADD.format(table="usage_team_daily"))
_MODEL_DAILY_UPSERT_SQL = """
INSERT INTO usage_model_daily (day, model_id, model_slug, {columns})
SELECT * FROM unnest(%s::date[], %s::bigint[], %s::text[], {arrays})
ON CONFLICT (day, model_id) DO UPDATE SET {add},
    model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug ELSE usage_model_daily.model_slug END
""".format(columns=_COARSE_COLUMNS, arrays=_COARSE_ARRAYS, add=_ADD.format(table="usage_model_daily"))
PICO = Decimal(10) ** -12
IDLE_TIMEOUT = "60s"


_HEALTH_UPSERT_SQL = """
INSERT INTO usage_request_health (team_id, hour, model_id, deployment_id, model_slug, requests, errors,
    latency_buckets, ttft_buckets)
SELECT team_id, hour, model_id, deployment_id, model_slug, requests, errors, latency::bigint[], ttft::bigint[]
FROM unnest(%s::bigint[], %s::timestamptz[], %s::bigint[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[],
    %s::text[], %s::text[]) AS u(team_id, hour, model_id, deployment_id, model_slug, requests, errors, latency, ttft)
ON CONFLICT (team_id, hour, model_id, deployment_id) DO UPDATE SET
    requests = usage_request_health.requests + EXCLUDED.requests,
    errors = usage_request_health.errors + EXCLUDED.errors,
    latency_buckets = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY n)
        FROM unnest(usage_request_health.latency_buckets, EXCLUDED.latency_buckets) WITH ORDINALITY AS x(a, b, n)),
    ttft_buckets = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY n)
        FROM unnest(usage_request_health.ttft_buckets, EXCLUDED.ttft_buckets) WITH ORDINALITY AS x(a, b, n)),
    model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug ELSE usage_request_health.model_slug END
"""
BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def _add(
    rows: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], slug: str, client_id: str, sums: list[Any]
) -> None:
    row = rows.get(key)
    if row is None:
        rows[key] = [*key, slug, client_id, *sums]
        return
    row[4], row[5] = max(row[4], slug), max(row[5], client_id)
    for offset, value in enumerate(sums, start=6):
        row[offset] += value


def _coarse(daily: dict[tuple[Any, ...], list[Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The daily rows summed per team and day, and per model and day (each sorted by its table's unique key)."""
    teams: dict[tuple[Any, ...], list[Any]] = {}
    models: dict[tuple[Any, ...], list[Any]] = {}
    for team_id, day, model_id, _credential_id, slug, _client_id, *sums in daily.values():
        team_row = teams.setdefault((team_id, day), [team_id, day, *([0] * len(sums))])
        model_row = models.setdefault((day, model_id), [day, model_id, "", *([0] * len(sums))])
        model_row[2] = max(model_row[2], slug)
        for offset, value in enumerate(sums):
            team_row[2 + offset] += value
            model_row[3 + offset] += value
    return [teams[key] for key in sorted(teams)], [models[key] for key in sorted(models)]


def _plus(total: list[int], more: list[int] | None) -> list[int]:
    return [a + b for a, b in zip(total, more, strict=True)] if more else total


def _add_health(
    rows: dict[tuple[Any, ...], list[Any]],
    key: tuple[Any, ...],
    slug: str,
    requests: int,
    errors: int,
    latency: list[int] | None,
    ttft: list[int] | None,
) -> None:
    row = rows.get(key)
    if row is None:
        row = rows[key] = [*key, slug, 0, 0, [0] * BUCKETS, [0] * BUCKETS]
    row[4] = max(row[4], slug)
    row[5] += requests
    row[6] += errors
    row[7], row[8] = _plus(row[7], latency), _plus(row[8], ttft)


def _array_literal(values: list[int]) -> str:
    return "{" + ",".join(str(value) for value in values) + "}"


def _upsert(cursor: Any, sql: str, rows: list[list[Any]]) -> None:
    if rows:
        columns = [list(column) for column in zip(*rows, strict=True)]
        if sql is _HEALTH_UPSERT_SQL:  # histograms travel as array literals (unnest would flatten a 2-D array)
            columns[7] = [_array_literal(values) for values in columns[7]]
            columns[8] = [_array_literal(values) for values in columns[8]]
        cursor.execute(sql, columns)


def usage_rollups_compact(*, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """Fold pending rollup deltas into the hourly and daily rollups, oldest first; returns the deltas folded.
    Safe to run concurrently and to die at any point (see above)."""
    folded = 0
    for _ in range(max_batches):
        last_used: dict[int, datetime] = {}
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)", [IDLE_TIMEOUT])
            cursor.execute(_TAKE_SQL, [batch_size])
            deltas = cursor.fetchall()
            if not deltas:
                break
            hourly: dict[tuple[Any, ...], list[Any]] = {}
            daily: dict[tuple[Any, ...], list[Any]] = {}
            health: dict[tuple[Any, ...], list[Any]] = {}
            for hour, team_id, model_id, credential_id, deployment_id, slug, client_id, *rest in deltas:
                *sums, cost_pico, last_at, latency, ttft = rest
                cost = (cost_pico or Decimal(0)) * PICO
                _add(hourly, (team_id, hour, model_id, credential_id), slug, client_id, [*sums, cost])
                _add(
                    daily,
                    (team_id, hour.astimezone(UTC).date(), model_id, credential_id),
                    slug,
                    client_id,
                    [*sums, cost],
                )
                if sums[0] or latency or ttft:  # a re-rating's delta carries cost only
                    _add_health(health, (team_id, hour, model_id, deployment_id), slug, sums[0], sums[1], latency, ttft)
                if last_at is not None and (credential_id not in last_used or last_used[credential_id] < last_at):
                    last_used[credential_id] = last_at
            taken = len(deltas)
            groups = list(hourly)
            _upsert(cursor, _HOURLY_UPSERT_SQL, [hourly[key] for key in sorted(hourly)])
            _upsert(cursor, _DAILY_UPSERT_SQL, [daily[key] for key in sorted(daily)])
            team_days, model_days = _coarse(daily)
            _upsert(cursor, _TEAM_DAILY_UPSERT_SQL, team_days)
            _upsert(cursor, _MODEL_DAILY_UPSERT_SQL, model_days)
            _upsert(cursor, _HEALTH_UPSERT_SQL, [health[key] for key in sorted(health)])
        folded += taken
        metrics.ROLLUP_BUCKETS.inc(len(groups))
        if last_used:
            try:
                # One write per credential per compaction, whatever the number of batches or how old their events.
                gateway_services.credential_mark_used(last_used=last_used)
            except Exception as error:  # "last used" is informational; it must never stop the rollups
                logger.warning("could not record credential last use: %s: %s", type(error).__name__, error)
    return folded


def usage_rollups_recompute(*, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """The name the beat schedule and other apps know: fold what changed into the rollups."""
    return usage_rollups_compact(batch_size=batch_size, max_batches=max_batches)
