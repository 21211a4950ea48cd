"""Reads of clusters: lists, capacity per accelerator type, and contracts for workers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet

from catalog.sizing import PoolOffer
from portal.clusters.contracts import KUEUE, AcceleratorPoolContract, ClusterConnection, ClusterContract
from portal.clusters.models import AcceleratorPool, Cluster
from portal.core.encryption import decrypt_secret
from portal.core.errors import NotFound
from portal.tenancy import selectors as tenancy_selectors


@dataclass(frozen=True)
class PoolCapacity:
    accelerator_type: str
    total: int
    allocated: int

    @property
    def free(self) -> int:
        return max(self.total - self.allocated, 0)


@dataclass(frozen=True)
class AcceleratorTypeCapacity:
    """One accelerator type across clusters: GPUs promised by team quotas, held by deployments, and installed."""

    accelerator_type: str
    quota: int
    allocated: int
    capacity: int


def accelerator_type_capacity(*, allocated: Mapping[tuple[int, str], int]) -> list[AcceleratorTypeCapacity]:
    """Every accelerator type a pool has or a quota grants, by name; `allocated` is GPUs held per (cluster id,
    accelerator type), counted in pools only (as each pool's capacity counts them)."""
    capacity: dict[str, int] = {}
    held: dict[str, int] = {}
    for pool in AcceleratorPool.objects.only("cluster_id", "accelerator_type", "gpu_count"):
        capacity[pool.accelerator_type] = capacity.get(pool.accelerator_type, 0) + pool.gpu_count
        held[pool.accelerator_type] = held.get(pool.accelerator_type, 0) + allocated.get(
            (pool.cluster_id, pool.accelerator_type), 0
        )
    quotas = tenancy_selectors.gpu_quota_by_accelerator_type()
    return [
        AcceleratorTypeCapacity(
            accelerator_type=accelerator_type,
            quota=quotas.get(accelerator_type, 0),
            allocated=held.get(accelerator_type, 0),
            capacity=capacity.get(accelerator_type, 0),
        )
        for accelerator_type in sorted(set(capacity) | set(quotas))
    ]


def cluster_list(*, region: str | None = None) -> QuerySet[Cluster]:
    clusters = Cluster.objects.prefetch_related("pools").order_by("name")
    return clusters.filter(region=region) if region else clusters


def cluster_ids(*, among: Iterable[int] | None = None) -> list[int]:
    """Ids of the registered clusters (of those among the given ids, when given)."""
    clusters = Cluster.objects.all() if among is None else Cluster.objects.filter(pk__in=list(among))
    return list(clusters.values_list("pk", flat=True))


def pool_hourly_prices() -> dict[tuple[int, str], Decimal]:
    """The hourly GPU price of every accelerator pool, by (cluster id, accelerator type)."""
    return {
        (cluster_id, accelerator_type): price
        for cluster_id, accelerator_type, price in AcceleratorPool.objects.values_list(
            "cluster_id", "accelerator_type", "hourly_price_per_gpu"
        )
    }


def cluster_get(*, name: str) -> Cluster:
    cluster = Cluster.objects.prefetch_related("pools").filter(name=name).first()
    if cluster is None:
        raise NotFound(f"Cluster '{name}' not found", code="cluster_not_found")
    return cluster


def cluster_has_pools(*, name: str) -> bool:
    return AcceleratorPool.objects.filter(cluster__name=name).exists()


def accelerator_pools_lock(
    *, cluster_name: str | None, accelerator_type: str | None, region: str | None, runs_llmd: bool = False
) -> list[AcceleratorPool]:
    """The pools a placement may choose from, locked (in the caller's transaction) so that admissions on the same
    pools are serialized: those of the named cluster, of the type, in the region, on clusters running llm-d."""
    pools = AcceleratorPool.objects.select_related("cluster").order_by("pk")
    if cluster_name:
        pools = pools.filter(cluster__name=cluster_name)
    if accelerator_type:
        pools = pools.filter(accelerator_type=accelerator_type)
    if region:
        pools = pools.filter(cluster__region=region)
    if runs_llmd:
        pools = pools.filter(cluster__runs_llmd=True)
    return list(pools.select_for_update(of=("self",)))


def accelerator_pool_get(*, cluster_id: int, accelerator_type: str) -> AcceleratorPool | None:
    return (
        AcceleratorPool.objects.select_related("cluster")
        .filter(cluster_id=cluster_id, accelerator_type=accelerator_type)
        .first()
    )


def pool_capacity(*, pool: AcceleratorPool, allocated: dict[tuple[int, str], int]) -> PoolCapacity:
    return PoolCapacity(
        accelerator_type=pool.accelerator_type,
        total=pool.gpu_count,
        allocated=allocated.get((pool.cluster_id, pool.accelerator_type), 0),
    )


def pool_offers(
    *,
    cluster: str | None = None,
    accelerator_type: str | None = None,
    region: str | None = None,
    accelerator_types: set[str] | None = None,
) -> list[PoolOffer]:
    """Pools as the sizing engine sees them (memory, size, price), narrowed as asked."""
    pools = AcceleratorPool.objects.select_related("cluster").order_by("cluster__name", "accelerator_type")
    if cluster:
        pools = pools.filter(cluster__name=cluster)
    if accelerator_type:
        pools = pools.filter(accelerator_type=accelerator_type)
    if region:
        pools = pools.filter(cluster__region=region)
    if accelerator_types is not None:
        pools = pools.filter(accelerator_type__in=accelerator_types)
    return [
        PoolOffer(
            cluster=pool.cluster.name,
            accelerator_type=pool.accelerator_type,
            gpu_memory_gb=pool.gpu_memory_gb,
            gpu_count=pool.gpu_count,
            hourly_price_per_gpu=pool.hourly_price_per_gpu,
        )
        for pool in pools
    ]


def cluster_contract(*, cluster_id: int) -> ClusterContract:
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"Cluster {cluster_id} not found", code="cluster_not_found")
    return ClusterContract(
        cluster_id=cluster.pk,
        name=cluster.name,
        region=cluster.region,
        gateway_namespace=cluster.gateway_namespace,
        gateway_name=cluster.gateway_name,
        deployment_mode=cluster.deployment_mode,
        autoscaler_class=cluster.autoscaler_class,
        namespace_prefix=cluster.namespace_prefix,
        apply_gateway_bootstrap=cluster.apply_gateway_bootstrap,
        gateway_url=cluster.gateway_url,
        runs_llmd=cluster.runs_llmd,
        gpu_quota=cluster.gpu_quota,
    )


def pool_contract(*, cluster_id: int, accelerator_type: str) -> AcceleratorPoolContract:
    pool = AcceleratorPool.objects.filter(cluster_id=cluster_id, accelerator_type=accelerator_type).first()
    if pool is None:
        raise NotFound(f"No {accelerator_type} pool in cluster {cluster_id}", code="pool_not_found")
    return AcceleratorPoolContract(
        accelerator_type=pool.accelerator_type,
        gpu_product=pool.gpu_product,
        node_selector={str(key): str(value) for key, value in pool.node_selector.items()},
        tolerations=tuple(pool.tolerations),
        gpu_memory_gb=pool.gpu_memory_gb,
    )


def kueue_cluster_ids() -> list[int]:
    """Clusters whose GPUs Kueue caps."""
    return list(Cluster.objects.filter(gpu_quota=KUEUE).order_by("pk").values_list("pk", flat=True))


def pool_contracts(*, cluster_id: int) -> list[AcceleratorPoolContract]:
    """Every accelerator pool of a cluster, by type."""
    return [
        pool_contract(cluster_id=cluster_id, accelerator_type=accelerator_type)
        for accelerator_type in AcceleratorPool.objects.filter(cluster_id=cluster_id)
        .order_by("accelerator_type")
        .values_list("accelerator_type", flat=True)
    ]


def cluster_connection(*, cluster_id: int) -> ClusterConnection:
    """Decrypt a cluster's credentials for a worker; never called on a request path."""
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"Cluster {cluster_id} not found", code="cluster_not_found")
    plaintext = decrypt_secret(cluster.credentials_ciphertext)
    if cluster.auth_kind == Cluster.AuthKind.KUBECONFIG:
        return ClusterConnection(
            cluster_id=cluster.pk,
            name=cluster.name,
            api_server=cluster.api_server,
            auth_kind=cluster.auth_kind,
            kubeconfig=plaintext,
            token=None,
            ca_bundle=None,
        )
    secret = json.loads(plaintext)
    return ClusterConnection(
        cluster_id=cluster.pk,
        name=cluster.name,
        api_server=cluster.api_server,
        auth_kind=cluster.auth_kind,
        kubeconfig=None,
        token=str(secret["token"]),
        ca_bundle=secret.get("ca_bundle"),
    )
