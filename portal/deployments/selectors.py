"""Reads of deployments: team-scoped lists, GPU allocation sums, and specs for the reconciler."""

from __future__ import annotations

from django.db.models import F, Q, QuerySet, Sum

from catalog import selectors as catalog_selectors
from portal.clusters import selectors as cluster_selectors
from portal.core.errors import NotFound
from portal.deployments.contracts import DeploymentSpec
from portal.deployments.models import Deployment, DeploymentEvent, Phase
from portal.gateway import selectors as gateway_selectors
from portal.tenancy.models import Team


def deployment_list(*, team: Team) -> QuerySet[Deployment]:
    return (
        Deployment.objects.filter(team=team)
        .select_related("team", "cluster", "model_version", "model_version__model")
        .order_by("name")
    )


def deployment_get(*, team: Team, name: str) -> Deployment:
    deployment = deployment_list(team=team).filter(name=name).first()
    if deployment is None:
        raise NotFound(f"Deployment '{name}' not found in team '{team.slug}'", code="deployment_not_found")
    return deployment


def deployment_events(*, deployment: Deployment) -> QuerySet[DeploymentEvent]:
    return DeploymentEvent.objects.filter(deployment=deployment).order_by("-occurred_at", "-id")


def gpus_allocated_by_cluster_and_type() -> dict[tuple[int, str], int]:
    """GPUs held by deployments (until their row is finalized), per (cluster id, accelerator type)."""
    rows = (
        Deployment.objects.values("cluster_id", "accelerator_type")
        .annotate(gpus=Sum(F("max_replicas") * F("gpus_per_replica")))
        .order_by()
    )
    return {(row["cluster_id"], row["accelerator_type"]): int(row["gpus"] or 0) for row in rows}


def team_gpus_in_use(*, team: Team, accelerator_type: str, excluding_id: int | None = None) -> int:
    deployments = Deployment.objects.filter(team=team, accelerator_type=accelerator_type)
    if excluding_id is not None:
        deployments = deployments.exclude(pk=excluding_id)
    total = deployments.aggregate(gpus=Sum(F("max_replicas") * F("gpus_per_replica")))["gpus"]
    return int(total or 0)


def deployment_ids_needing_reconcile(*, include_ready: bool) -> list[int]:
    """The outbox: rows whose spec is ahead of what was observed, rows not Ready, and (slowly) all of them."""
    deployments = Deployment.objects.all()
    if not include_ready:
        deployments = deployments.filter(Q(observed_generation__lt=F("generation")) | ~Q(phase=Phase.READY))
    return list(deployments.order_by("pk").values_list("pk", flat=True))


def deployment_resync_plan(*, include_ready: bool) -> tuple[list[int], dict[int, list[int]]]:
    """The outbox split two ways: rows that need a full reconcile whatever the cluster shows (spec ahead of what
    was observed, being deleted), and the rest by cluster id, to be checked against one snapshot per cluster."""
    direct: list[int] = []
    by_cluster: dict[int, list[int]] = {}
    rows = Deployment.objects.all()
    if not include_ready:
        rows = rows.filter(Q(observed_generation__lt=F("generation")) | ~Q(phase=Phase.READY))
    for deployment_id, cluster_id, generation, observed, phase in rows.order_by("pk").values_list(
        "pk", "cluster_id", "generation", "observed_generation", "phase"
    ):
        if observed < generation or phase == Phase.DELETING:
            direct.append(deployment_id)
        else:
            by_cluster.setdefault(cluster_id, []).append(deployment_id)
    return direct, by_cluster


def deployment_spec(*, deployment_id: int) -> DeploymentSpec | None:
    """The frozen desired state of a deployment, or None when its row is gone (finalized)."""
    deployment = (
        Deployment.objects.select_related("team", "model_version", "model_version__model")
        .filter(pk=deployment_id)
        .first()
    )
    if deployment is None:
        return None
    return DeploymentSpec(
        deployment_id=deployment.pk,
        generation=deployment.generation,
        team_slug=deployment.team.slug,
        name=deployment.name,
        served_model_name=deployment.served_model_name,
        min_replicas=deployment.min_replicas,
        max_replicas=deployment.max_replicas,
        scale_to_zero=deployment.scale_to_zero,
        gpus_per_replica=deployment.gpus_per_replica,
        runtime_args=tuple(deployment.runtime_args),
        model_cache=deployment.model_cache,
        deleting=deployment.phase == Phase.DELETING,
        model=catalog_selectors.model_version_contract(
            model_slug=deployment.model_version.model.slug, version=deployment.model_version.version
        ),
        cluster=cluster_selectors.cluster_contract(cluster_id=deployment.cluster_id),
        pool=cluster_selectors.pool_contract(
            cluster_id=deployment.cluster_id, accelerator_type=deployment.accelerator_type
        ),
        allowed_key_ids=gateway_selectors.deployment_allowed_key_ids(
            team_slug=deployment.team.slug, model_slug=deployment.model_version.model.slug
        ),
    )
