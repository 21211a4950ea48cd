"""Rollups: the compactor folds the deltas that ingestion, re-rating and quarantine release wrote into the hourly and
daily rollups, and advances each credential's "last used"."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction

from portal.gateway import services as gateway_services
from portal.usage import metrics
from portal.usage.models import LATENCY_BOUNDS_MS

logger = logging.getLogger(__name__)

# Exactly once, without a protocol of its own: a delta is written in the transaction that changed the raw events,
# and deleted in the transaction that adds it to the rollups. A compactor takes the oldest deltas with SKIP LOCKED
# (concurrent compactors take different ones), and if it dies its transaction rolls back and the deltas are taken
# by the next run; one stuck idle in its transaction is cut off by idle_in_transaction_session_timeout.
#
# One statement folds what it takes into every rollup: each data-modifying CTE sums the taken deltas per its
# table's unique key and adds them (PostgreSQL runs every data-modifying CTE once, on one snapshot: docs 7.8.4), so
# no delta passes through Python (folding them in Python, with each rollup's columns sent back as array
# parameters, cost about 6 µs of the compactor's CPU per ingested event). Rows are inserted in unique-key order, so
# concurrent compactors lock rollup rows in one order (no deadlock). A label is kept once known; a compensating
# delta (re-rating) carries none. The answer: how many deltas and hourly buckets, and each credential's last event.
BUCKETS = len(LATENCY_BOUNDS_MS) + 1
_SUMMED = (
    "requests",
    "failed_requests",
    "unmetered_requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
_SUMS = ", ".join(f"sum({column})" for column in _SUMMED) + ", coalesce(sum(cost_pico), 0) * 0.000000000001"
_COLUMNS = ", ".join(_SUMMED) + ", cost"
_ADD = ", ".join(f"{column} = {{table}}.{column} + EXCLUDED.{column}" for column in (*_SUMMED, "cost"))
_LABELS = (
    "model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug ELSE {table}.model_slug END, "
    "client_id = CASE WHEN EXCLUDED.client_id <> '' THEN EXCLUDED.client_id ELSE {table}.client_id END"
)


def _bucket_sums(column: str) -> str:
    """Element-wise sums of a histogram column over the group (an absent histogram counts as zeros)."""
    return "ARRAY[" + ", ".join(f"sum(coalesce({column}[{n}], 0))" for n in range(1, BUCKETS + 1)) + "]::bigint[]"


def _bucket_add(table: str, column: str) -> str:
    return (
        f"{column} = ARRAY["
        + ", ".join(
            f"coalesce({table}.{column}[{n}], 0) + coalesce(EXCLUDED.{column}[{n}], 0)" for n in range(1, BUCKETS + 1)
        )
        + "]::bigint[]"
    )


_FOLD_SQL = f"""
WITH taken AS (
    DELETE FROM usage_rollup_delta
    WHERE id IN (SELECT id FROM usage_rollup_delta ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING *, (hour AT TIME ZONE 'UTC')::date AS day
), hourly AS (
    INSERT INTO usage_hourly (team_id, hour, model_id, credential_id, model_slug, client_id, {_COLUMNS})
    SELECT team_id, hour, model_id, credential_id, max(model_slug), max(client_id), {_SUMS}
    FROM taken GROUP BY team_id, hour, model_id, credential_id ORDER BY team_id, hour, model_id, credential_id
    ON CONFLICT (team_id, hour, model_id, credential_id) DO UPDATE SET
        {_ADD.format(table="usage_hourly")}, {_LABELS.format(table="usage_hourly")}
    RETURNING 1
), daily AS (
    INSERT INTO usage_daily (team_id, day, model_id, credential_id, model_slug, client_id, {_COLUMNS})
    SELECT team_id, day, model_id, credential_id, max(model_slug), max(client_id), {_SUMS}
    FROM taken GROUP BY team_id, day, model_id, credential_id ORDER BY team_id, day, model_id, credential_id
    ON CONFLICT (team_id, day, model_id, credential_id) DO UPDATE SET
        {_ADD.format(table="usage_daily")}, {_LABELS.format(table="usage_daily")}
), team_daily AS (
    INSERT INTO usage_team_daily (team_id, day, {_COLUMNS}, gpu_hours, gpu_cost)
    SELECT team_id, day, {_SUMS}, 0, 0 FROM taken GROUP BY team_id, day ORDER BY team_id, day
    ON CONFLICT (team_id, day) DO UPDATE SET {_ADD.format(table="usage_team_daily")}
), model_daily AS (
    INSERT INTO usage_model_daily (day, model_id, model_slug, {_COLUMNS})
    SELECT day, model_id, max(model_slug), {_SUMS} FROM taken GROUP BY day, model_id ORDER BY day, model_id
    ON CONFLICT (day, model_id) DO UPDATE SET {_ADD.format(table="usage_model_daily")},
        model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug ELSE usage_model_daily.model_slug END
), health AS (
    INSERT INTO usage_request_health (team_id, hour, model_id, deployment_id, model_slug, requests, errors,
        latency_buckets, ttft_buckets)
    SELECT team_id, hour, model_id, coalesce(deployment_id, 0), max(model_slug), sum(requests), sum(failed_requests),
        {_bucket_sums("latency_buckets")}, {_bucket_sums("ttft_buckets")}
    FROM taken
    WHERE requests <> 0 OR cardinality(latency_buckets) > 0 OR cardinality(ttft_buckets) > 0  -- not a re-rating's
    GROUP BY team_id, hour, model_id, coalesce(deployment_id, 0) ORDER BY 1, 2, 3, 4
    ON CONFLICT (team_id, hour, model_id, deployment_id) DO UPDATE SET
        requests = usage_request_health.requests + EXCLUDED.requests,
        errors = usage_request_health.errors + EXCLUDED.errors,
        {_bucket_add("usage_request_health", "latency_buckets")},
        {_bucket_add("usage_request_health", "ttft_buckets")},
        model_slug = CASE WHEN EXCLUDED.model_slug <> '' THEN EXCLUDED.model_slug
            ELSE usage_request_health.model_slug END
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM hourly), NULL::bigint, NULL::timestamptz
UNION ALL
SELECT NULL, NULL, credential_id, max(last_event_at) FROM taken WHERE last_event_at IS NOT NULL GROUP BY credential_id
"""  # noqa: S608 (only this module's constants are formatted in: column names, bucket indexes)
IDLE_TIMEOUT = "60s"


def usage_rollups_compact(*, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """Fold pending rollup deltas into the hourly and daily rollups, oldest first; returns the deltas folded.
    Safe to run concurrently and to die at any point (see above)."""
    folded = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)", [IDLE_TIMEOUT])
            cursor.execute(_FOLD_SQL, [batch_size])
            (taken, buckets, _, _), *used = cursor.fetchall()
        if not taken:
            break
        folded += taken
        metrics.ROLLUP_BUCKETS.inc(buckets)
        last_used: dict[int, datetime] = {credential_id: moment for _, _, credential_id, moment in used}
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
