"""A collector's sources point at the API token in its new app (portal.tokens); the table and the foreign key
constraint in the database are unchanged, so this moves state only."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0001_initial"),
        ("usage", "0011_gpu_daily_rollup"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="collectorsource",
                    name="token",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="usage_sources",
                        to="tokens.apitoken",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
