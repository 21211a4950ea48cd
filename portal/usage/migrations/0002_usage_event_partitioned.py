"""The raw usage event table, partitioned by month (declarative partitioning), and its first partitions."""

from datetime import UTC, datetime

from django.conf import settings
from django.db import migrations

from portal.usage import partitions


def create_partitions(apps, schema_editor):
    partitions.forget_known_partitions()
    partitions.partitions_ensure_ahead(
        today=datetime.now(UTC).date(), months_ahead=settings.USAGE_PARTITIONS_AHEAD, months_behind=2
    )
    partitions.forget_known_partitions()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [
        migrations.RunSQL(partitions.CREATE_RAW_TABLE, partitions.DROP_RAW_TABLE),
        migrations.RunPython(create_partitions, migrations.RunPython.noop),
    ]
