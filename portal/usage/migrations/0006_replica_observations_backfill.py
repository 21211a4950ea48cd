"""GPU-hours now integrate the replica change log (deployments.ReplicaObservation): each running deployment gets
one observation of what is running now, at its accrual cursor (so nothing is charged twice) or now (never
accrued yet)."""

from django.db import migrations
from django.utils import timezone


def backfill(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    ReplicaObservation = apps.get_model("deployments", "ReplicaObservation")
    GpuAccrualCursor = apps.get_model("usage", "GpuAccrualCursor")
    cursors = dict(GpuAccrualCursor.objects.values_list("deployment_id", "sampled_at"))
    now = timezone.now()
    for deployment in Deployment.objects.filter(observed_replicas__gt=0).select_related("cluster"):
        ReplicaObservation.objects.create(
            deployment_id=deployment.pk,
            deployment_name=deployment.name,
            team_id=deployment.team_id,
            cluster_id=deployment.cluster_id,
            cluster_name=deployment.cluster.name,
            accelerator_type=deployment.accelerator_type,
            gpus_per_replica=deployment.gpus_per_replica,
            replicas=deployment.observed_replicas,
            observed_at=cursors.get(deployment.pk, now),
        )


class Migration(migrations.Migration):
    dependencies = [("usage", "0005_usage_event_deployment"), ("deployments", "0003_replica_observations")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
