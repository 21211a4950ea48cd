"""Migration usage.0008 converts raw events into the lean table and drops the old one, so it cannot be undone
(README, "Usage metering"): going back past it is refused before anything changes, and the events stay stored."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor

from portal.usage import store
from tests.portal.usage.conftest import UsageWorld

pytestmark = pytest.mark.django_db

LEAN = ("usage", "0008_lean_raw_events_and_rollup_deltas")
BEFORE = ("usage", "0007_english_labels")


def _tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname IN ('usage_event', 'usage_event_v1')")
        return {name for (name,) in cursor.fetchall()}


def test_going_back_past_the_lean_table_is_refused_and_changes_nothing(world: UsageWorld) -> None:
    event = world.event(input_tokens=1000, output_tokens=200)
    assert world.post([event]).status_code == 200
    stored = store.stored_event(source=event["source"], event_id=event["id"])
    assert stored is not None

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction: check its foreign keys before DDL
    executor = MigrationExecutor(connection)
    executor.migrate([LEAN])  # the later usage migrations go back cleanly
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    plan = executor.migration_plan([BEFORE])
    assert [(migration.app_label, migration.name) for migration, backwards in plan] == [LEAN]
    with pytest.raises(IrreversibleError, match="0008_lean_raw_events_and_rollup_deltas"):
        executor.migrate([BEFORE])

    assert _tables() == {"usage_event"}  # the lean table, not the old one back
    assert executor.loader.applied_migrations is not None
    executor.loader.build_graph()
    assert LEAN in executor.loader.applied_migrations
    assert store.stored_event(source=event["source"], event_id=event["id"]) == stored
