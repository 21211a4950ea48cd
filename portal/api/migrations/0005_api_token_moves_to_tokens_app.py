"""The API token model leaves the api app's state for the tokens app (tokens/0001_initial); its table stays."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0004_english_labels"),
        ("tokens", "0001_initial"),
        ("usage", "0012_collector_source_token_in_tokens_app"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
