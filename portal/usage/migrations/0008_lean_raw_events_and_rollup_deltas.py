"""The lean raw event table (portal.usage.store says what it keeps and why) replaces the first one, its events
converted; rollups become the sum of deltas, so the dirty-bucket queue and its claims go (buckets still marked are
recomputed from the old table first, the last time raw events are re-read)."""

import django.contrib.postgres.fields
from django.db import migrations, models

from portal.usage import partitions, store

_RENAME_OLD = """
ALTER TABLE usage_event RENAME TO usage_event_v1;
ALTER INDEX usage_event_key RENAME TO usage_event_v1_key;
ALTER INDEX IF EXISTS usage_event_team_time RENAME TO usage_event_v1_team_time;
ALTER INDEX IF EXISTS usage_event_quarantined RENAME TO usage_event_v1_quarantined;
"""

_RECOMPUTE_MARKED = """
WITH marked AS (
    SELECT hour, team_id FROM usage_dirty_hour UNION SELECT hour, team_id FROM usage_rollup_claim
), cleared AS (
    DELETE FROM usage_hourly h USING marked m WHERE h.team_id = m.team_id AND h.hour = m.hour RETURNING h.id
)
INSERT INTO usage_hourly (team_id, hour, model_id, model_slug, credential_id, client_id, requests, failed_requests,
    unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
SELECT e.team_id, date_trunc('hour', e.event_time, 'UTC'), e.model_id, max(e.model_slug), e.credential_id,
    max(e.client_id), count(*), count(*) FILTER (WHERE e.status_code >= 400),
    count(*) FILTER (WHERE e.input_tokens IS NULL AND e.output_tokens IS NULL),
    coalesce(sum(e.input_tokens), 0), coalesce(sum(e.cached_input_tokens), 0), coalesce(sum(e.cache_write_tokens), 0),
    coalesce(sum(e.output_tokens), 0), coalesce(sum(e.reasoning_tokens), 0), sum(e.cost)
FROM marked m JOIN usage_event_v1 e ON e.team_id = m.team_id AND e.event_time >= m.hour
    AND e.event_time < m.hour + interval '1 hour'
WHERE e.state = 'rated'
GROUP BY e.team_id, date_trunc('hour', e.event_time, 'UTC'), e.model_id, e.credential_id;

WITH days AS (
    SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date AS day, team_id FROM usage_dirty_hour
    UNION SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date, team_id FROM usage_rollup_claim
), cleared AS (
    DELETE FROM usage_daily d USING days c WHERE d.team_id = c.team_id AND d.day = c.day RETURNING d.id
)
INSERT INTO usage_daily (team_id, day, model_id, model_slug, credential_id, client_id, requests, failed_requests,
    unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
SELECT h.team_id, c.day, h.model_id, max(h.model_slug), h.credential_id, max(h.client_id), sum(h.requests),
    sum(h.failed_requests), sum(h.unmetered_requests), sum(h.input_tokens), sum(h.cached_input_tokens),
    sum(h.cache_write_tokens), sum(h.output_tokens), sum(h.reasoning_tokens), sum(h.cost)
FROM days c JOIN usage_hourly h ON h.team_id = c.team_id AND h.hour >= (c.day::timestamp AT TIME ZONE 'UTC')
    AND h.hour < ((c.day + 1)::timestamp AT TIME ZONE 'UTC')
GROUP BY h.team_id, c.day, h.model_id, h.credential_id;
"""

_KEY = "substr(encode(sha256(convert_to(e.source || E'\\n' || e.event_id, 'UTF8')), 'hex'), 1, 32)::uuid"

_CONVERT = f"""
INSERT INTO usage_source (name) SELECT DISTINCT source FROM usage_event_v1 ORDER BY 1 ON CONFLICT DO NOTHING;
INSERT INTO usage_price_set (price_ids) SELECT DISTINCT price_ids FROM usage_event_v1 WHERE state = 'rated'
    ORDER BY 1 ON CONFLICT DO NOTHING;
INSERT INTO usage_event (event_time, received_at, cost_pico, event_key, source_id, team_id, credential_id, model_id,
    price_set_id, deployment_id, model_version_id, duration_ms, ttft_ms, input_tokens, cached_input_tokens,
    cache_write_tokens, output_tokens, reasoning_tokens, status_code, quarantine)
SELECT e.event_time, e.received_at, CASE WHEN e.state = 'rated' THEN (e.cost * 1000000000000)::bigint END, {_KEY},
    s.id, e.team_id, e.credential_id, e.model_id, CASE WHEN e.state = 'rated' THEN p.id END, e.deployment_id,
    e.model_version_id, e.duration_ms, NULL, e.input_tokens, e.cached_input_tokens, e.cache_write_tokens,
    e.output_tokens, e.reasoning_tokens, e.status_code,
    CASE WHEN e.state = 'quarantined'
         THEN coalesce(array_position(%(reasons)s::text[], e.reason), %(unknown_model)s) END
FROM usage_event_v1 e JOIN usage_source s ON s.name = e.source LEFT JOIN usage_price_set p ON p.price_ids = e.price_ids
ON CONFLICT DO NOTHING;
INSERT INTO usage_quarantined_event (event_time, event_key, source, event_id, client_id, model_names, reason,
    received_at)
SELECT e.event_time, {_KEY}, e.source, e.event_id, e.client_id,
    CASE WHEN jsonb_typeof(e.extras -> 'model_names') = 'array'
         THEN ARRAY(SELECT jsonb_array_elements_text(e.extras -> 'model_names'))
         WHEN e.model_name <> '' THEN ARRAY[e.model_name] ELSE '{{}}'::text[] END,
    e.reason, e.received_at
FROM usage_event_v1 e WHERE e.state = 'quarantined'
ON CONFLICT DO NOTHING;
DROP TABLE usage_event_v1 CASCADE;
"""


def _months(schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT date_trunc('month', event_time, 'UTC')::date FROM usage_event_v1 ORDER BY 1"
        )
        return [row[0] for row in cursor.fetchall()]


def convert(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_RENAME_OLD)
        for statement in _RECOMPUTE_MARKED.split(";\n"):
            if statement.strip():
                cursor.execute(statement)
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_event_v1'")
        for (name,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {name} RENAME TO {name.replace('usage_event_', 'usage_event_v1_', 1)}")
        cursor.execute(store.CREATE_RAW_TABLE)
    partitions.forget_known_partitions()
    from datetime import UTC, datetime

    from django.conf import settings

    partitions.partitions_ensure_ahead(
        today=datetime.now(UTC).date(), months_ahead=settings.USAGE_PARTITIONS_AHEAD, months_behind=2
    )
    for month in _months(schema_editor):
        partitions.partition_ensure(month)
    partitions.forget_known_partitions()
    with schema_editor.connection.cursor() as cursor:
        parameters = {
            "reasons": list(store.QUARANTINE_REASONS),
            "unknown_model": store.QUARANTINE_CODES["unknown_model"],
        }
        for statement in _CONVERT.split(";\n"):
            if statement.strip():
                cursor.execute(statement, parameters if "%(" in statement else None)



class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0007_english_labels'),
    ]

    operations = [
        migrations.CreateModel(
            name='QuarantinedEventDetail',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_time', models.DateTimeField()),
                ('event_key', models.UUIDField()),
                ('source', models.TextField()),
                ('event_id', models.CharField(max_length=200)),
                ('client_id', models.CharField(blank=True, max_length=200)),
                ('model_names', django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=255), default=list, size=None)),
                ('reason', models.CharField(max_length=40)),
                ('received_at', models.DateTimeField()),
            ],
            options={
                'db_table': 'usage_quarantined_event',
            },
        ),
        migrations.CreateModel(
            name='UsagePriceSet',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('price_ids', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), size=None, unique=True)),
            ],
            options={
                'db_table': 'usage_price_set',
            },
        ),
        migrations.CreateModel(
            name='UsageRollupDelta',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('team_id', models.BigIntegerField()),
                ('model_id', models.BigIntegerField()),
                ('credential_id', models.BigIntegerField()),
                ('deployment_id', models.BigIntegerField(null=True)),
                ('model_slug', models.CharField(blank=True, help_text='label; empty when the writer did not know it', max_length=63)),
                ('client_id', models.CharField(blank=True, help_text='label; empty when the writer did not know it', max_length=200)),
                ('requests', models.BigIntegerField(default=0)),
                ('failed_requests', models.BigIntegerField(default=0)),
                ('unmetered_requests', models.BigIntegerField(default=0)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_input_tokens', models.BigIntegerField(default=0)),
                ('cache_write_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('cost_pico', models.DecimalField(decimal_places=0, default=0, help_text='10^-12 currency units', max_digits=38)),
                ('last_event_at', models.DateTimeField(null=True)),
            ],
            options={
                'db_table': 'usage_rollup_delta',
            },
        ),
        migrations.CreateModel(
            name='UsageSource',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.TextField(unique=True)),
            ],
            options={
                'db_table': 'usage_source',
            },
        ),
        migrations.RunPython(convert, elidable=False),
        migrations.DeleteModel(
            name='UsageDirtyHour',
        ),
        migrations.DeleteModel(
            name='UsageRollupClaim',
        ),
        migrations.AddConstraint(
            model_name='quarantinedeventdetail',
            constraint=models.UniqueConstraint(fields=('event_time', 'event_key'), name='one_detail_per_event'),
        ),
    ]
