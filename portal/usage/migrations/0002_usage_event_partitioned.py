"""The raw usage event table, partitioned by month (declarative partitioning), and its first partitions."""

from datetime import UTC, datetime

from django.conf import settings
from django.db import migrations

from portal.usage import partitions

# The table as it was first created (0008 replaces it with the lean one); frozen here so this migration never changes.
CREATE_RAW_TABLE = """
CREATE TABLE IF NOT EXISTS usage_event (
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
    price_ids bigint[] NOT NULL DEFAULT '{}',
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
CREATE INDEX IF NOT EXISTS usage_event_team_time ON usage_event (team_id, event_time);
CREATE INDEX IF NOT EXISTS usage_event_quarantined ON usage_event (event_time) WHERE state = 'quarantined';
"""

DROP_RAW_TABLE = "DROP TABLE IF EXISTS usage_event CASCADE;"


def create_partitions(apps, schema_editor):
    partitions.forget_known_partitions()
    partitions.partitions_ensure_ahead(
        today=datetime.now(UTC).date(), months_ahead=settings.USAGE_PARTITIONS_AHEAD, months_behind=2
    )
    partitions.forget_known_partitions()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE_RAW_TABLE, DROP_RAW_TABLE),
        migrations.RunPython(create_partitions, migrations.RunPython.noop),
    ]
