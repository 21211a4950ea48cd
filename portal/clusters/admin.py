"""Admin UI of clusters: settings and accelerator pools are written through the clusters services (validated,
audited, as through the API); a cluster is registered, and its credentials replaced, through the API only, and
credentials are never shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portal.clusters import services
from portal.clusters.models import AcceleratorPool, Cluster
from portal.core.admin import ReadOnlyInline, ServiceWriteAdmin, money


class PoolInline(ReadOnlyInline):
    model = AcceleratorPool
    fields = readonly_fields = (
        "accelerator_type",
        "gpu_product",
        "gpu_count",
        "gpu_memory_gb",
        "price",
        "inventory_synced_at",
    )

    @admin.display(description="per GPU-hour")
    def price(self, pool: AcceleratorPool) -> str:
        return money(pool.hourly_price_per_gpu)


@admin.register(Cluster)
class ClusterAdmin(ServiceWriteAdmin):
    list_display = [
        "name",
        "region",
        "api_server",
        "deployment_mode",
        "autoscaler_class",
        "health",
        "kubernetes_version",
        "last_checked_at",
    ]
    list_filter = ["region", "health", "deployment_mode"]
    search_fields = ["name", "display_name", "api_server", "region"]
    fields = ["name", *services.CLUSTER_FIELDS, "auth_kind", "health", "health_message", "kubernetes_version"]
    readonly_fields = ["name", "auth_kind", "health", "health_message", "kubernetes_version"]
    inlines = [PoolInline]

    def service_update(self, request: HttpRequest, current: Cluster, changes: dict[str, Any]) -> Cluster:
        return services.cluster_update(actor=request.user, cluster=current, changes=changes)  # type: ignore[arg-type]


@admin.register(AcceleratorPool)
class AcceleratorPoolAdmin(ServiceWriteAdmin):
    list_display = [
        "cluster",
        "accelerator_type",
        "gpu_product",
        "gpu_count",
        "gpu_memory_gb",
        "price",
        "inventory_synced_at",
    ]
    list_filter = ["accelerator_type", "cluster"]
    search_fields = ["cluster__name", "accelerator_type", "gpu_product"]
    fields = ["cluster", "accelerator_type", *services.POOL_FIELDS, "inventory_synced_at"]
    readonly_fields = ["inventory_synced_at"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [*self.readonly_fields, "cluster", "accelerator_type"] if obj is not None else self.readonly_fields

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> AcceleratorPool:
        cluster, accelerator_type = values.pop("cluster"), values.pop("accelerator_type")
        return services.accelerator_pool_upsert(
            actor=request.user,  # type: ignore[arg-type]
            cluster=cluster,
            accelerator_type=accelerator_type,
            values=values,
        )

    def service_update(
        self, request: HttpRequest, current: AcceleratorPool, changes: dict[str, Any]
    ) -> AcceleratorPool:
        return services.accelerator_pool_upsert(
            actor=request.user,  # type: ignore[arg-type]
            cluster=current.cluster,
            accelerator_type=current.accelerator_type,
            values=changes,
        )

    @admin.display(description="per GPU-hour", ordering="hourly_price_per_gpu")
    def price(self, pool: AcceleratorPool) -> str:
        return money(pool.hourly_price_per_gpu)
