"""The raw event table: its DDL and its monthly partitions (created ahead, and on demand for late events)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

from django.db import connection, transaction

from portal.usage.models import RAW_EVENT_TABLE

CREATE_RAW_TABLE = f"""
CREATE TABLE IF NOT EXISTS {RAW_EVENT_TABLE} (
    event_time timestamptz NOT NULL,
    source text NOT NULL,
    event_id text NOT NULL,
    received_at timestamptz NOT NULL,
    client_id text NOT NULL DEFAULT '',
    credential_id bigint,
    team_id bigint,
    model_name text NOT NULL DEFAULT '',
    model_id bigint,
    model_slug text NOT NULL DEFAULT '',
    provider text NOT NULL DEFAULT '',
    route text NOT NULL DEFAULT '',
    status_code integer,
    duration_ms bigint,
    input_tokens bigint,
    cached_input_tokens bigint,
    cache_write_tokens bigint,
    output_tokens bigint,
    reasoning_tokens bigint,
    cost numeric(24, 12),
    price_ids bigint[] NOT NULL DEFAULT '{{}}',
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    extras jsonb,
    CONSTRAINT usage_event_key UNIQUE (event_time, source, event_id),
    CONSTRAINT usage_event_state_known CHECK (state IN ('rated', 'quarantined')),
    CONSTRAINT usage_event_rated_is_attributed CHECK (
        state <> 'rated' OR (team_id IS NOT NULL AND model_id IS NOT NULL AND credential_id IS NOT NULL
                             AND cost IS NOT NULL)
    ),
    CONSTRAINT usage_event_tokens_not_negative CHECK (
        coalesce(input_tokens, 0) >= 0 AND coalesce(cached_input_tokens, 0) >= 0
        AND coalesce(cache_write_tokens, 0) >= 0 AND coalesce(output_tokens, 0) >= 0
        AND coalesce(reasoning_tokens, 0) >= 0
    )
) PARTITION BY RANGE (event_time);
CREATE INDEX IF NOT EXISTS usage_event_team_time ON {RAW_EVENT_TABLE} (team_id, event_time);
CREATE INDEX IF NOT EXISTS usage_event_quarantined ON {RAW_EVENT_TABLE} (event_time) WHERE state = 'quarantined';
"""

DROP_RAW_TABLE = f"DROP TABLE IF EXISTS {RAW_EVENT_TABLE} CASCADE;"

# Months whose partition this process has seen exist; partitions are never dropped while the portal runs.
_known_months: set[date] = set()
_known_lock = threading.Lock()


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{RAW_EVENT_TABLE}_{month:%Y_%m}"


def _exists(cursor: object, month: date) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [partition_name(month)])  # type: ignore[attr-defined]
    return bool(cursor.fetchone()[0])  # type: ignore[attr-defined]


def partition_ensure(month: date) -> bool:
    """Create the month's partition unless it exists; True when it was created. Serialized by an advisory
    lock so concurrent creators do not race; run outside the caller's transaction."""
    month = month_start(month)
    with _known_lock:
        if month in _known_months:
            return False
    created = False
    with transaction.atomic(), connection.cursor() as cursor:
        if not _exists(cursor, month):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [RAW_EVENT_TABLE + ":partitions"])
            if not _exists(cursor, month):
                start = datetime(month.year, month.month, 1, tzinfo=UTC)
                end_month = next_month(month)
                end = datetime(end_month.year, end_month.month, 1, tzinfo=UTC)
                cursor.execute(
                    f"CREATE TABLE {partition_name(month)} PARTITION OF {RAW_EVENT_TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
                created = True
    if not connection.in_atomic_block:  # inside an outer transaction the partition may yet be rolled back
        with _known_lock:
            _known_months.add(month)
    return created


def partitions_ensure_ahead(*, today: date, months_ahead: int, months_behind: int = 1) -> list[str]:
    """Partitions from `months_behind` before today's month to `months_ahead` after it; the names created."""
    first = add_months(month_start(today), -months_behind)
    created = []
    for offset in range(months_behind + months_ahead + 1):
        month = add_months(first, offset)
        if partition_ensure(month):
            created.append(partition_name(month))
    return created


def partitions_drop_older_than(*, today: date, months: int) -> list[str]:
    """Keep the partitions of this month and the `months` - 1 before it, drop older ones; the names
    dropped. Rollups and budgets, computed from them long before, stay."""
    oldest_kept = add_months(month_start(today), -(months - 1))  # this month and the months - 1 before it
    dropped = []
    for name in partition_list():
        suffix = name.removeprefix(RAW_EVENT_TABLE + "_")
        try:
            month = date(int(suffix[:4]), int(suffix[5:7]), 1)
        except ValueError:
            continue
        if month < oldest_kept:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [RAW_EVENT_TABLE + ":partitions"])
                cursor.execute(f"DROP TABLE IF EXISTS {partition_name(month)}")
            with _known_lock:
                _known_months.discard(month)
            dropped.append(name)
    return dropped


def partition_list() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s ORDER BY c.relname",
            [RAW_EVENT_TABLE],
        )
        return [row[0] for row in cursor.fetchall()]


def forget_known_partitions() -> None:
    """Tests recreate the database; the in-process cache must not outlive it."""
    with _known_lock:
        _known_months.clear()
