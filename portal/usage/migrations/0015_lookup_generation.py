"""A generation number of what usage ingestion reads on every batch (collectors' source bindings, catalog models,
their versions' names, their prices, and the names team deployments served under), so each web process can keep
them between batches and know when to read them again (portal.usage.selectors.ingest_lookups).

Statement-level triggers on those tables set it in the writing transaction, whatever writes them (services, the
admin, a migration, raw SQL): the new number becomes visible when, and only when, the change does. The number comes
from a sequence, which never gives a number twice even when the transaction that took it rolls back: a reader inside
a transaction that changed the catalog and rolled back (every test does) can never meet that number again with
other rows behind it."""

from django.db import migrations

# (app label, model) of every table the lookups read.
WATCHED = (
    ("usage", "CollectorSource"),
    ("catalog", "CatalogModel"),
    ("catalog", "ModelVersion"),
    ("catalog", "ModelPrice"),
    ("deployments", "ServedName"),
)

CREATE = [
    "CREATE TABLE usage_lookup_generation (id smallint PRIMARY KEY CHECK (id = 1), value bigint NOT NULL)",
    "INSERT INTO usage_lookup_generation (id, value) VALUES (1, 0)",
    "CREATE SEQUENCE usage_lookup_generation_seq",
    """
    CREATE FUNCTION usage_lookup_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE usage_lookup_generation SET value = nextval('usage_lookup_generation_seq') WHERE id = 1;
        RETURN NULL;
    END
    $$
    """,
]


def _tables(apps):
    return [apps.get_model(label, name)._meta.db_table for label, name in WATCHED]


def create(apps, schema_editor):
    for statement in CREATE:
        schema_editor.execute(statement)
    for table in _tables(apps):
        schema_editor.execute(
            f"CREATE TRIGGER usage_lookup_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_lookup_generation_bump()"
        )


def drop(apps, schema_editor):
    for table in _tables(apps):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS usage_lookup_generation ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS usage_lookup_generation_bump()")
    schema_editor.execute("DROP TABLE IF EXISTS usage_lookup_generation")
    schema_editor.execute("DROP SEQUENCE IF EXISTS usage_lookup_generation_seq")


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0014_coarse_daily_rollups"),
        ("catalog", "0004_version_serving_modes"),
        ("deployments", "0006_mode_switch_held_gpus"),
    ]

    operations = [migrations.RunPython(create, drop)]
