"""Admin UI of clusters: credentials are never shown (only replaced through the API)."""

from __future__ import annotations

from django.contrib import admin

from portal.clusters.models import AcceleratorPool, Cluster


class PoolInline(admin.TabularInline):
    model = AcceleratorPool
    extra = 0
    readonly_fields = ["gpu_count", "inventory_synced_at"]


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
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
    exclude = ["credentials_ciphertext"]
    readonly_fields = [
        "auth_kind",
        "health",
        "health_message",
        "kubernetes_version",
        "last_checked_at",
        "created_at",
        "updated_at",
    ]
    inlines = [PoolInline]


@admin.register(AcceleratorPool)
class AcceleratorPoolAdmin(admin.ModelAdmin):
    list_display = [
        "cluster",
        "accelerator_type",
        "gpu_product",
        "gpu_count",
        "gpu_memory_gb",
        "hourly_price_per_gpu",
        "inventory_synced_at",
    ]
    list_filter = ["accelerator_type", "cluster"]
    search_fields = ["cluster__name", "accelerator_type", "gpu_product"]
