"""Team slugs may not start with 'genai-portal': the portal's own objects in a cluster's gateway namespace do, and
no deployment's may collide with them. A team already named so stops the migration, named, for an admin to decide."""

from django.db import migrations, models
from django.db.models import Q

PREFIX = "genai-portal"


def refuse_reserved(apps, schema_editor):
    Team = apps.get_model("tenancy", "Team")
    reserved = sorted(Team.objects.filter(slug__startswith=PREFIX).values_list("slug", flat=True))
    if reserved:
        raise RuntimeError(
            f"team slugs starting with '{PREFIX}' are reserved for the portal's own gateway objects: "
            f"{', '.join(reserved)}; move these teams' work to new teams, delete them, then migrate again"
        )


class Migration(migrations.Migration):
    dependencies = [("tenancy", "0003_backstage_refs_lowercase_and_unique_ignoring_case")]

    operations = [
        migrations.RunPython(refuse_reserved, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="team",
            constraint=models.CheckConstraint(condition=~Q(slug__startswith=PREFIX), name="team_slug_not_reserved"),
        ),
    ]
