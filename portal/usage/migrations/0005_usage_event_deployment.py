"""Self-hosted usage is attributed to the deployment that served it: its id and catalog model version on each event
(columns added to the partitioned parent reach every partition)."""

from django.db import migrations

from portal.usage.models import RAW_EVENT_TABLE

ADD = f"""
ALTER TABLE {RAW_EVENT_TABLE} ADD COLUMN IF NOT EXISTS deployment_id bigint;
ALTER TABLE {RAW_EVENT_TABLE} ADD COLUMN IF NOT EXISTS model_version_id bigint;
"""
DROP = f"""
ALTER TABLE {RAW_EVENT_TABLE} DROP COLUMN IF EXISTS deployment_id;
ALTER TABLE {RAW_EVENT_TABLE} DROP COLUMN IF EXISTS model_version_id;
"""


class Migration(migrations.Migration):
    dependencies = [("usage", "0004_price_rerate")]

    operations = [migrations.RunSQL(ADD, DROP)]
