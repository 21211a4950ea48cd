"""Reads of deployments: team-scoped lists, GPU allocation sums, and specs for the reconciler."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from django.db.models import Case, F, Max, Q, QuerySet, Sum, When
from django.db.models.expressions import CombinedExpression

from catalog import selectors as catalog_selectors
from catalog import sizing
from catalog.contracts import ModelVersionContract
from portal.clusters import selectors as cluster_selectors
from portal.clusters.contracts import AcceleratorPoolContract, ClusterContract
from portal.core.errors import NotFound
from portal.deployments.contracts import LLMD_MODE, DeploymentSpec, ObservedStatus, ServedNameRef
from portal.deployments.models import Deployment, DeploymentEvent, Phase, ReplicaObservation, ServedName
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import SERVING_TIER_PRIORITIES

if TYPE_CHECKING:  # types only: teams are read through tenancy's selectors
    from portal.tenancy.models import Team


def reserved_gpus_expression() -> CombinedExpression:
    """GPUs a deployment row holds against quota and capacity, in SQL: its most decode (or standard) replicas at
    their GPUs, plus its prefill replicas at theirs (a prefill replica with 0 GPUs of its own has a decode
    replica's). The database form of gpu_accounting.gpus_reserved (rows outside llm-d have no prefill, by
    constraint). During a mode switch, what the old mode's objects still hold is added: both modes hold GPUs until
    the old objects are pruned, so nothing else may be admitted into them."""
    prefill_each = Case(
        When(prefill_gpus_per_replica=0, then=F("gpus_per_replica")), default=F("prefill_gpus_per_replica")
    )
    return F("max_replicas") * F("gpus_per_replica") + F("prefill_replicas") * prefill_each + F("switch_held_gpus")


def team_gpus_held_by_switches(*, team: Team, accelerator_type: str, excluding_id: int | None = None) -> dict[str, int]:
    """Deployment name -> the GPUs its old serving mode still holds, for the team's switches in flight."""
    rows = Deployment.objects.filter(team=team, accelerator_type=accelerator_type, switch_held_gpus__gt=0)
    if excluding_id is not None:
        rows = rows.exclude(pk=excluding_id)
    return dict(rows.order_by("name").values_list("name", "switch_held_gpus"))


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
        .annotate(gpus=Sum(reserved_gpus_expression()))
        .order_by()
    )
    return {(row["cluster_id"], row["accelerator_type"]): int(row["gpus"] or 0) for row in rows}


def served_names_on_cluster(*, cluster_id: int, team_ids: list[int]) -> dict[tuple[int, str], set[str]]:
    """(team id, catalog model slug) -> the names the teams' deployments on the cluster serve under (every row until
    it is finalized): what a key's model allow-list covers on that cluster's gateway."""
    names: dict[tuple[int, str], set[str]] = {}
    for team_id, model_slug, served_name in Deployment.objects.filter(
        cluster_id=cluster_id, team_id__in=team_ids
    ).values_list("team_id", "model_version__model__slug", "served_model_name"):
        names.setdefault((team_id, model_slug), set()).add(served_name)
    return names


def team_gpus_in_use(*, team: Team, accelerator_type: str, excluding_id: int | None = None) -> int:
    deployments = Deployment.objects.filter(team=team, accelerator_type=accelerator_type)
    if excluding_id is not None:
        deployments = deployments.exclude(pk=excluding_id)
    total = deployments.aggregate(gpus=Sum(reserved_gpus_expression()))["gpus"]
    return int(total or 0)


def deployment_resync_plan(*, include_ready: bool) -> tuple[list[int], dict[int, list[int]]]:
    """The outbox split two ways: rows that need a full reconcile whatever the cluster shows (spec ahead of what
    was observed, being deleted, a mode switch still holding the old mode's GPUs), and the rest by cluster id, to be checked against one snapshot per cluster."""
    direct: list[int] = []
    by_cluster: dict[int, list[int]] = {}
    rows = Deployment.objects.all()
    if not include_ready:
        rows = rows.filter(
            Q(observed_generation__lt=F("generation")) | ~Q(phase=Phase.READY) | Q(switch_held_gpus__gt=0)
        )
    for deployment_id, cluster_id, generation, observed, phase, held in rows.order_by("pk").values_list(
        "pk", "cluster_id", "generation", "observed_generation", "phase", "switch_held_gpus"
    ):
        # A mode switch still counted as in flight is finished (or its GPUs released) only by a full reconcile.
        if observed < generation or phase == Phase.DELETING or held:
            direct.append(deployment_id)
        else:
            by_cluster.setdefault(cluster_id, []).append(deployment_id)
    return direct, by_cluster


def _plan_runtime_args(model: ModelVersionContract, deployment: Deployment) -> tuple[str, ...]:
    if model.architecture is None:
        return ()
    context, kv_cache_dtype = sizing.serving_choices(
        model.architecture, catalog_args=model.runtime_args, team_args=tuple(deployment.runtime_args)
    )
    return tuple(
        sizing.runtime_args(
            context=context,
            tensor_parallel_size=deployment.gpus_per_replica,
            kv_cache_dtype=kv_cache_dtype,
            engine=catalog_selectors.sizing_engine(),
        )
    )


def _spec_rows() -> QuerySet[Deployment]:
    return Deployment.objects.select_related("team", "model_version", "model_version__model")


class AllowedKeyIds(Protocol):
    """Which of the team's current keys a deployment's route admits: None when every one may call the model, else
    the key ids that may (possibly none). Keys are the gateway's; gateway and deployments are independent siblings,
    so the caller above both (the reconciler in workers) hands the gateway's reader in."""

    def __call__(self, *, team_slug: str, model_slug: str) -> tuple[str, ...] | None: ...


def deployment_spec(*, deployment_id: int, allowed_key_ids: AllowedKeyIds | None) -> DeploymentSpec | None:
    """The frozen desired state of a deployment, or None when its row is gone (finalized). With allowed_key_ids
    None the spec's route admits every key of the team (allowed_key_ids=None in the spec)."""
    deployment = _spec_rows().filter(pk=deployment_id).first()
    if deployment is None:
        return None
    return _SpecReader(allowed_key_ids).spec(deployment)


def deployment_specs(*, deployment_ids: list[int], allowed_key_ids: AllowedKeyIds | None) -> list[DeploymentSpec]:
    """The specs of many deployments (a resync): one query for the rows, and the catalog, cluster, pool and
    key contracts that many rows share read once each. Rows already finalized are left out."""
    reader = _SpecReader(allowed_key_ids)
    return [reader.spec(deployment) for deployment in _spec_rows().filter(pk__in=deployment_ids).order_by("pk")]


class _SpecReader:
    """Builds specs, remembering the contracts it has read."""

    def __init__(self, allowed_key_ids: AllowedKeyIds | None) -> None:
        self._allowed_key_ids = allowed_key_ids
        self._models: dict[tuple[str, str], ModelVersionContract] = {}
        self._clusters: dict[int, ClusterContract] = {}
        self._pools: dict[tuple[int, str], AcceleratorPoolContract] = {}
        self._key_ids: dict[tuple[str, str], tuple[str, ...] | None] = {}
        self._tiers: dict[str, str] = {}

    def spec(self, deployment: Deployment) -> DeploymentSpec:
        team_slug = deployment.team.slug
        model_slug, version = deployment.model_version.model.slug, deployment.model_version.version
        if (model_slug, version) not in self._models:
            self._models[(model_slug, version)] = catalog_selectors.model_version_contract(
                model_slug=model_slug, version=version
            )
        if deployment.cluster_id not in self._clusters:
            self._clusters[deployment.cluster_id] = cluster_selectors.cluster_contract(cluster_id=deployment.cluster_id)
        pool_key = (deployment.cluster_id, deployment.accelerator_type)
        if pool_key not in self._pools:
            self._pools[pool_key] = cluster_selectors.pool_contract(
                cluster_id=deployment.cluster_id, accelerator_type=deployment.accelerator_type
            )
        if (team_slug, model_slug) not in self._key_ids:
            self._key_ids[(team_slug, model_slug)] = (
                self._allowed_key_ids(team_slug=team_slug, model_slug=model_slug)
                if self._allowed_key_ids is not None
                else None
            )
        if team_slug not in self._tiers:
            self._tiers.update(tenancy_selectors.team_serving_tiers(team_slugs=[team_slug]))
        return DeploymentSpec(
            deployment_id=deployment.pk,
            generation=deployment.generation,
            team_slug=team_slug,
            name=deployment.name,
            served_model_name=deployment.served_model_name,
            served_model_aliases=tuple(deployment.served_model_aliases or ()),
            min_replicas=deployment.min_replicas,
            max_replicas=deployment.max_replicas,
            scale_to_zero=deployment.scale_to_zero,
            gpus_per_replica=deployment.gpus_per_replica,
            runtime_args=tuple(deployment.runtime_args),
            model_cache=deployment.model_cache,
            deleting=deployment.phase == Phase.DELETING,
            observed_generation=deployment.observed_generation,
            model=self._models[(model_slug, version)],
            cluster=self._clusters[deployment.cluster_id],
            pool=self._pools[pool_key],
            allowed_key_ids=self._key_ids[(team_slug, model_slug)],
            plan_runtime_args=_plan_runtime_args(self._models[(model_slug, version)], deployment),
            serving_mode=deployment.serving_mode,
            prefill_replicas=deployment.prefill_replicas,
            prefill_gpus_per_replica=deployment.prefill_gpus_per_replica,
            objective_priority=SERVING_TIER_PRIORITIES.get(self._tiers.get(team_slug, ""), 0),
            switch_held_gpus=deployment.switch_held_gpus,
        )


def deployment_ids_built_from(
    *,
    model_version_id: int | None = None,
    team_id: int | None = None,
    cluster_id: int | None = None,
    accelerator_type: str | None = None,
    serving_mode: str | None = None,
) -> list[int]:
    """The deployments (not being deleted) built from a catalog version, a team's keys, a cluster or one of its
    pools (and served in a mode): those a change of it may concern."""
    rows = Deployment.objects.exclude(phase=Phase.DELETING)
    if model_version_id is not None:
        rows = rows.filter(model_version_id=model_version_id)
    if team_id is not None:
        rows = rows.filter(team_id=team_id)
    if cluster_id is not None:
        rows = rows.filter(cluster_id=cluster_id)
    if accelerator_type is not None:
        rows = rows.filter(accelerator_type=accelerator_type)
    if serving_mode is not None:
        rows = rows.filter(serving_mode=serving_mode)
    return list(rows.order_by("pk").values_list("pk", flat=True))


def deployment_ids_in_a_mode_no_longer_allowed(*, deployment_ids: Iterable[int]) -> list[int]:
    """Those of these deployments (not being deleted) served in the llm-d mode whose catalog version no longer offers
    it or whose cluster no longer runs llm-d (the two things a mode is chosen within)."""
    rows = (
        Deployment.objects.filter(pk__in=list(deployment_ids), serving_mode=LLMD_MODE)
        .exclude(phase=Phase.DELETING)
        .filter(Q(cluster__runs_llmd=False) | ~Q(model_version__serving_modes__contains=[LLMD_MODE]))
    )
    return list(rows.order_by("pk").values_list("pk", flat=True))


def deployment_ids_of_team_models(
    *, team_id: int, model_slugs: Iterable[str] | None = None, excluding_model_slugs: Iterable[str] | None = None
) -> list[int]:
    """The team's deployments (not being deleted) of these catalog models, or of every model but those excluded."""
    rows = Deployment.objects.filter(team_id=team_id).exclude(phase=Phase.DELETING)
    if model_slugs is not None:
        rows = rows.filter(model_version__model__slug__in=list(model_slugs))
    if excluding_model_slugs is not None:
        rows = rows.exclude(model_version__model__slug__in=list(excluding_model_slugs))
    return list(rows.order_by("pk").values_list("pk", flat=True))


def deployment_input_fingerprint(spec: DeploymentSpec) -> str:
    """A digest of everything a deployment's manifests are built from: its own fields and what it reads of the
    catalog version, the cluster, the accelerator pool (and the team's keys, when the spec was read with them). The
    generation, what was observed and a version's lifecycle (which builds nothing) are left out, so it changes
    exactly when the desired objects may."""
    document = dataclasses.asdict(
        dataclasses.replace(
            spec,
            generation=0,
            observed_generation=0,
            deleting=False,
            model=dataclasses.replace(spec.model, lifecycle=""),
        )
    )
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def deployment_input_fingerprints(*, deployment_ids: Iterable[int]) -> dict[int, str]:
    """Deployment id -> fingerprint of its inputs, for the deployments not being deleted (a few queries for all).
    The team's keys are left out: a change of them reaches deployments from the gateway through a task it names
    (deployments.team_key_routes_changed), not through this watch of the deployments' other inputs."""
    specs = deployment_specs(deployment_ids=list(deployment_ids), allowed_key_ids=None)
    return {spec.deployment_id: deployment_input_fingerprint(spec) for spec in specs if not spec.deleting}


def deployment_applied_hashes(*, deployment_ids: Iterable[int], annotation: str) -> dict[int, dict[str, str]]:
    """What the reconciler last applied to each deployment: '<kind>/<name>' -> the content hash it carried."""
    found: dict[int, dict[str, str]] = {}
    for deployment_id, manifests in Deployment.objects.filter(pk__in=list(deployment_ids)).values_list(
        "pk", "applied_manifests"
    ):
        found[deployment_id] = {
            f"{item['kind']}/{item['metadata']['name']}": str(
                (item["metadata"].get("annotations") or {}).get(annotation)
            )
            for item in manifests or []
        }
    return found


def deployment_observed_statuses(*, deployment_ids: list[int]) -> dict[int, ObservedStatus]:
    """What was last recorded for each deployment, to compare a fresh observation with before writing."""
    return {
        row["pk"]: ObservedStatus(
            phase=row["phase"],
            conditions=tuple(row["conditions"] or ()),
            message=row["message"],
            endpoint=row["endpoint"],
            observed_replicas=row["observed_replicas"],
            observed_prefill_replicas=row["observed_prefill_replicas"],
        )
        for row in Deployment.objects.filter(pk__in=deployment_ids).values(
            "pk", "phase", "conditions", "message", "endpoint", "observed_replicas", "observed_prefill_replicas"
        )
    }


def served_names(*, names: Iterable[str]) -> dict[str, list[ServedNameRef]]:
    """Who served under each of these names, and when, oldest first (usage attribution; names never held are
    absent). One query for a whole batch of events."""
    found: dict[str, list[ServedNameRef]] = {}
    for row in ServedName.objects.filter(name__in=set(names)).order_by("name", "valid_from"):
        found.setdefault(row.name, []).append(
            ServedNameRef(
                deployment_id=row.deployment_id,
                deployment_name=row.deployment_name,
                team_id=row.team_id,
                model_version_id=row.model_version_id,
                model_id=row.model_id,
                model_slug=row.model_slug,
                valid_from=row.valid_from,
                valid_until=row.valid_until,
            )
        )
    return found


def deployments_not_ready(*, team_ids: list[int] | None = None) -> QuerySet[Deployment]:
    """Deployments whose phase is anything but Ready, oldest change first (the console's attention list)."""
    rows = Deployment.objects.exclude(phase=Phase.READY).select_related("team", "cluster", "model_version__model")
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return rows.order_by("updated_at", "pk")


def deployment_list_for_model(*, model_id: int, team_ids: list[int] | None) -> QuerySet[Deployment]:
    """Where one catalog model is deployed, within the teams given (None: every team)."""
    rows = Deployment.objects.filter(model_version__model_id=model_id).select_related(
        "team", "cluster", "model_version"
    )
    if team_ids is not None:
        rows = rows.filter(team_id__in=team_ids)
    return rows.order_by("team__slug", "name")


def deployment_names_by_ids(*, deployment_ids: Iterable[int]) -> dict[int, str]:
    return dict(Deployment.objects.filter(pk__in=set(deployment_ids)).values_list("pk", "name"))


def replica_change_latest_by_deployment() -> dict[int, datetime]:
    """When each deployment's replicas last changed (the newest entry of its replica change log)."""
    return dict(
        ReplicaObservation.objects.order_by()
        .values("deployment_id")
        .annotate(latest=Max("observed_at"))
        .values_list("deployment_id", "latest")
    )


def replica_observation_at(*, deployment_id: int, at: datetime | None = None) -> ReplicaObservation | None:
    """What was observed of one deployment at `at` (its last change at or before it); with no `at`, its first."""
    rows = ReplicaObservation.objects.filter(deployment_id=deployment_id)
    if at is None:
        return rows.order_by("observed_at", "pk").first()
    return rows.filter(observed_at__lte=at).order_by("-observed_at", "-pk").first()


def replica_observations(
    *, deployment_id: int, after: datetime | None = None, until: datetime
) -> list[ReplicaObservation]:
    """The replica change log of one deployment, oldest first: those after `after` (exclusive) up to `until`."""
    rows = ReplicaObservation.objects.filter(deployment_id=deployment_id, observed_at__lte=until)
    if after is not None:
        rows = rows.filter(observed_at__gt=after)
    return list(rows.order_by("observed_at", "pk"))
