"""The raw event table's monthly partitions (created ahead, and on demand for late events); its DDL is in
portal.usage.store."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

from django.db import connection, transaction

from portal.usage.models import RAW_EVENT_TABLE

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
    with connection.cursor() as cursor:  # what quarantined events of those months said goes with them
        cursor.execute(
            "DELETE FROM usage_quarantined_event WHERE event_time < %s",
            [datetime(oldest_kept.year, oldest_kept.month, 1, tzinfo=UTC)],
        )
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
