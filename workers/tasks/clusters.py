"""Cluster tasks: connectivity check (version and health) and GPU inventory from the nodes."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from portal.clusters import selectors as cluster_selectors
from portal.clusters import services as cluster_services
from workers.kube.client import connect
from workers.kube.errors import ClusterError
from workers.provisioning.manifests.upstream import GPU_RESOURCE

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@shared_task(name="clusters.check", acks_late=True)
def check(cluster_id: int) -> bool:
    cluster = connect(cluster_selectors.cluster_connection(cluster_id=cluster_id))
    try:
        version = cluster.version()
    except ClusterError as error:
        cluster_services.cluster_health_record(
            cluster_id=cluster_id, healthy=False, message=error.message, version="", checked_at=timezone.now()
        )
        return False
    cluster_services.cluster_health_record(
        cluster_id=cluster_id, healthy=True, message="", version=version, checked_at=timezone.now()
    )
    return True


@shared_task(name="clusters.inventory", acks_late=True, autoretry_for=(ClusterError,), retry_backoff=5, max_retries=3)
def inventory(cluster_id: int) -> dict[str, int]:
    """Allocatable GPUs per node product (nodes labelled nvidia.com/gpu.product), matched to pools."""
    cluster = connect(cluster_selectors.cluster_connection(cluster_id=cluster_id))
    gpus: dict[str, int] = {}
    for node in cluster.list("v1", "Node", label_selector=GPU_PRODUCT_LABEL):
        labels = node.metadata.get("labels") or {}
        allocatable = (node.manifest.get("status") or {}).get("allocatable") or {}
        product = str(labels.get(GPU_PRODUCT_LABEL, ""))
        try:
            count = int(str(allocatable.get(GPU_RESOURCE, "0")))
        except ValueError:
            count = 0
        gpus[product] = gpus.get(product, 0) + count
    cluster_services.cluster_inventory_record(cluster_id=cluster_id, gpus_by_product=gpus)
    return gpus


@shared_task(name="clusters.check_all", acks_late=True)
def check_all() -> int:
    ids = list(cluster_selectors.cluster_list().values_list("pk", flat=True))
    for cluster_id in ids:
        check.delay(cluster_id)
        inventory.delay(cluster_id)
    return len(ids)
