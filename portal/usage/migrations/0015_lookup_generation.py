"""A generation number of what usage ingestion reads on every batch (collectors' source bindings, catalog models,
their versions' names, their prices, and the names team deployments served under), so each web process can keep
them between batches and know when to read them again (portal.usage.selectors.ingest_lookups).

Triggers on those tables, whatever writes them (services, the admin, a migration, raw SQL):
- at commit, a deferred constraint trigger sets the number, once per transaction, to one from a sequence (never
  given twice, even by a transaction that rolled back). At commit, so the row lock it takes is the last lock of the
  writing transaction: a statement trigger would take it at the write, and a catalog change (which then locks the
  deployments built from it) could deadlock with a deployment's finalize (which locks the deployment, then closes
  its served names). The number becomes visible when, and only when, the change does.
- at the write, a statement trigger marks the transaction (a transaction-local setting, no lock): a reader in the
  same transaction, which sees the change before anyone else, then reads afresh and keeps nothing (tests write the
  catalog and ingest in one transaction that never commits).
TRUNCATE (tests and operators) sets the number at once: constraint triggers are per row."""

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
        IF current_setting('portal.lookup_generation_bumped', true) IS DISTINCT FROM 'yes' THEN
            UPDATE usage_lookup_generation SET value = nextval('usage_lookup_generation_seq') WHERE id = 1;
            PERFORM set_config('portal.lookup_generation_bumped', 'yes', true);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION usage_lookup_generation_touch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM set_config('portal.lookups_changed', 'yes', true);
        IF TG_OP = 'TRUNCATE' THEN
            UPDATE usage_lookup_generation SET value = nextval('usage_lookup_generation_seq') WHERE id = 1;
        END IF;
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
            f"CREATE CONSTRAINT TRIGGER usage_lookup_generation AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION usage_lookup_generation_bump()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER usage_lookup_generation_touch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_lookup_generation_touch()"
        )


def drop(apps, schema_editor):
    for table in _tables(apps):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS usage_lookup_generation ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS usage_lookup_generation_touch ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS usage_lookup_generation_bump()")
    schema_editor.execute("DROP FUNCTION IF EXISTS usage_lookup_generation_touch()")
    schema_editor.execute("DROP TABLE IF EXISTS usage_lookup_generation")
    schema_editor.execute("DROP SEQUENCE IF EXISTS usage_lookup_generation_seq")


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0014_coarse_daily_rollups"),
        ("catalog", "0004_version_serving_modes"),
        ("deployments", "0006_mode_switch_held_gpus"),
    ]

    operations = [migrations.RunPython(create, drop)]
