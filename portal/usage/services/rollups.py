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
SELECT hour, team_id, model_id, credential_id, max(model_slug), max(client_id), sum(requests), sum(failed_requests),
    sum(unmetered_requests), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens),
    sum(output_tokens), sum(reasoning_tokens), sum(cost_pico), max(last_event_at), count(*)
FROM taken
GROUP BY hour, team_id, model_id, credential_id
ORDER BY team_id, hour, model_id, credential_id
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
PICO = Decimal(10) ** -12
IDLE_TIMEOUT = "60s"


def _upsert(cursor: Any, sql: str, rows: list[list[Any]]) -> None:
    if rows:
        cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])


def usage_rollups_compact(*, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """Fold pending rollup deltas into the hourly and daily rollups, oldest first; returns the deltas folded.
    Safe to run concurrently and to die at any point (see above)."""
    folded = 0
    for _ in range(max_batches):
        last_used: dict[int, datetime] = {}
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)", [IDLE_TIMEOUT])
            cursor.execute(_TAKE_SQL, [batch_size])
            groups = cursor.fetchall()
            if not groups:
                break
            hourly: list[list[Any]] = []
            daily: dict[tuple[int, Any, int, int], list[Any]] = {}
            taken = 0
            for hour, team_id, model_id, credential_id, slug, client_id, *sums, cost_pico, last_at, count in groups:
                cost = (cost_pico or Decimal(0)) * PICO
                hourly.append([team_id, hour, model_id, credential_id, slug, client_id, *sums, cost])
                day = hour.astimezone(UTC).date()
                key = (team_id, day, model_id, credential_id)
                row = daily.get(key)
                if row is None:
                    daily[key] = [team_id, day, model_id, credential_id, slug, client_id, *sums, cost]
                else:
                    row[4], row[5] = max(row[4], slug), max(row[5], client_id)
                    for offset, value in enumerate([*sums, cost], start=6):
                        row[offset] += value
                if last_at is not None and (credential_id not in last_used or last_used[credential_id] < last_at):
                    last_used[credential_id] = last_at
                taken += count
            _upsert(cursor, _HOURLY_UPSERT_SQL, hourly)
            _upsert(cursor, _DAILY_UPSERT_SQL, [daily[key] for key in sorted(daily)])
        folded += taken
        metrics.ROLLUP_BUCKETS.inc(len(groups))
        if last_used:
            try:
                # One write per credential per compaction, whatever the number of batches or how old their events.
                gateway_services.credential_mark_used(last_used=last_used)
            except Exception:  # "last used" is informational; it must never stop the rollups
                logger.warning("could not record credential last use", exc_info=True)
    return folded


def usage_rollups_recompute(*, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """The name the beat schedule and other apps know: fold what changed into the rollups."""
    return usage_rollups_compact(batch_size=batch_size, max_batches=max_batches)
