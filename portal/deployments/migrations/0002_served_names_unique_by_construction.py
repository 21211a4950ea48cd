"""Served model names (and gateway object names) unique across teams by construction (portal/deployments/names.py).

Existing deployments take their new name, keep the old one as an alias their route still answers to (unless another
deployment or a catalog model also went by it: then nobody keeps it), and get their generation bumped, so one
reconcile applies the new objects before it prunes the old ones: the team's keys never lose the model.
"""

from django.db import migrations, models
from django.db.models import Q
from django.utils import timezone

from portal.deployments.names import deployment_gateway_name


def rename(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    DeploymentEvent = apps.get_model("deployments", "DeploymentEvent")
    ServedName = apps.get_model("deployments", "ServedName")
    ModelVersion = apps.get_model("catalog", "ModelVersion")
    rows = list(Deployment.objects.select_related("team", "model_version", "model_version__model").order_by("pk"))
    new_names = {
        row.pk: deployment_gateway_name(team_slug=row.team.slug, name=row.name, deployment_id=row.pk) for row in rows
    }
    old_counts: dict[str, int] = {}
    for row in rows:
        old_counts[row.served_model_name] = old_counts.get(row.served_model_name, 0) + 1
    taken = set(new_names.values()) | set(ModelVersion.objects.values_list("served_model_name", flat=True))
    for row in rows:
        old, new = row.served_model_name, new_names[row.pk]
        names = [new]
        if old != new:
            keep = old_counts[old] == 1 and old not in taken
            row.served_model_aliases = [old] if keep else []
            row.served_model_name = new
            row.generation += 1
            row.save(update_fields=["served_model_name", "served_model_aliases", "generation"])
            if keep:
                names.append(old)
            DeploymentEvent.objects.create(
                deployment=row,
                phase=row.phase,
                reason="Renamed",
                message=(
                    f"served as '{new}' (unique across teams); "
                    + (f"'{old}' still answers" if keep else f"'{old}' is no longer served: another model used it too")
                ),
                generation=row.generation,
            )
        for name in names:
            ServedName.objects.create(
                name=name,
                deployment_id=row.pk,
                deployment_name=row.name,
                team_id=row.team_id,
                model_version_id=row.model_version_id,
                model_id=row.model_version.model_id,
                model_slug=row.model_version.model.slug,
                valid_from=row.created_at or timezone.now(),
            )


class Migration(migrations.Migration):
    dependencies = [("deployments", "0001_initial"), ("catalog", "0002_initial")]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="served_model_aliases",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.CreateModel(
            name="ServedName",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=128)),
                ("deployment_id", models.BigIntegerField()),
                ("deployment_name", models.CharField(max_length=40)),
                ("team_id", models.BigIntegerField()),
                ("model_version_id", models.BigIntegerField()),
                ("model_id", models.BigIntegerField()),
                ("model_slug", models.CharField(max_length=63)),
                ("valid_from", models.DateTimeField()),
                ("valid_until", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["name", "valid_from"],
                "indexes": [models.Index(fields=["deployment_id"], name="deployments_deploym_3de2fc_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=Q(valid_until__isnull=True), fields=("name",), name="served_name_one_live_holder"
                    )
                ],
            },
        ),
        migrations.RunPython(rename, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="deployment",
            constraint=models.UniqueConstraint(fields=("served_model_name",), name="deployment_served_model_name_unique"),
        ),
    ]
