"""Shapes of the clusters API; credentials are write-only and never serialized back."""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.serializers import QueryFilters, StrictInput, TolerationOutput
from portal.clusters.models import AcceleratorPool, Cluster


class ClusterListQuery(QueryFilters):
    region = serializers.CharField(required=False, allow_blank=True, max_length=64)


class PoolCapacityOutput(serializers.Serializer):
    total = serializers.IntegerField()
    allocated = serializers.IntegerField()
    free = serializers.IntegerField()


class AcceleratorTypeOutput(serializers.Serializer):
    accelerator_type = serializers.CharField()
    quota = serializers.IntegerField(help_text="GPUs granted to all teams together by their quotas")
    allocated = serializers.IntegerField(help_text="GPUs held by deployments (max replicas times GPUs per replica)")
    capacity = serializers.IntegerField(help_text="GPUs installed in the pools of every cluster")


class PoolOutput(serializers.ModelSerializer):
    hourly_price_per_gpu = serializers.DecimalField(max_digits=12, decimal_places=4, coerce_to_string=True)
    capacity = serializers.SerializerMethodField()
    node_selector = serializers.DictField(child=serializers.CharField(), help_text="Kubernetes node labels")
    tolerations = TolerationOutput(many=True)

    class Meta:
        model = AcceleratorPool
        fields = [
            "accelerator_type",
            "gpu_product",
            "gpu_memory_gb",
            "node_selector",
            "tolerations",
            "hourly_price_per_gpu",
            "capacity",
            "inventory_synced_at",
        ]

    @extend_schema_field(PoolCapacityOutput)
    def get_capacity(self, pool: AcceleratorPool) -> dict[str, int]:
        allocated = self.context.get("allocated", {}).get((pool.cluster_id, pool.accelerator_type), 0)
        return {"total": pool.gpu_count, "allocated": allocated, "free": max(pool.gpu_count - allocated, 0)}


class ClusterOutput(serializers.ModelSerializer):
    pools = PoolOutput(many=True)

    class Meta:
        model = Cluster
        fields = [
            "name",
            "display_name",
            "api_server",
            "auth_kind",
            "region",
            "gateway_namespace",
            "gateway_name",
            "deployment_mode",
            "autoscaler_class",
            "namespace_prefix",
            "gateway_url",
            "apply_gateway_bootstrap",
            "runs_llmd",
            "gpu_quota",
            "health",
            "health_message",
            "kubernetes_version",
            "last_checked_at",
            "pools",
        ]


class ClusterCreateInput(StrictInput):
    name = serializers.CharField(max_length=40)
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    api_server = serializers.CharField(max_length=500)
    auth_kind = serializers.ChoiceField(choices=Cluster.AuthKind.choices)
    kubeconfig = serializers.CharField(required=False, write_only=True, max_length=200_000)
    token = serializers.CharField(required=False, write_only=True, max_length=20_000)
    ca_bundle = serializers.CharField(required=False, write_only=True, allow_blank=True, max_length=200_000)
    region = serializers.CharField(max_length=64)
    gateway_namespace = serializers.CharField(max_length=63)
    gateway_name = serializers.CharField(max_length=63)
    deployment_mode = serializers.ChoiceField(choices=Cluster.DeploymentMode.choices, default="Standard")
    autoscaler_class = serializers.ChoiceField(choices=Cluster.AutoscalerClass.choices, required=False)
    namespace_prefix = serializers.CharField(max_length=22, required=False, allow_blank=True)
    apply_gateway_bootstrap = serializers.BooleanField(required=False, default=False)
    gateway_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    runs_llmd = serializers.BooleanField(
        required=False, default=False, help_text="The cluster runs the llm-d stack: deployments may use the llm-d mode"
    )
    gpu_quota = serializers.ChoiceField(
        choices=Cluster.GpuQuota.choices,
        required=False,
        default=Cluster.GpuQuota.RESOURCE_QUOTA,
        help_text="How team GPUs are capped: a ResourceQuota per team namespace, or Kueue queues in one cohort",
    )


class ClusterUpdateInput(StrictInput):
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    api_server = serializers.CharField(max_length=500, required=False)
    region = serializers.CharField(max_length=64, required=False)
    deployment_mode = serializers.ChoiceField(choices=Cluster.DeploymentMode.choices, required=False)
    autoscaler_class = serializers.ChoiceField(choices=Cluster.AutoscalerClass.choices, required=False)
    apply_gateway_bootstrap = serializers.BooleanField(required=False)
    gateway_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    runs_llmd = serializers.BooleanField(required=False)
    gpu_quota = serializers.ChoiceField(choices=Cluster.GpuQuota.choices, required=False)
    auth_kind = serializers.ChoiceField(choices=Cluster.AuthKind.choices, required=False)
    kubeconfig = serializers.CharField(required=False, write_only=True, max_length=200_000)
    token = serializers.CharField(required=False, write_only=True, max_length=20_000)
    ca_bundle = serializers.CharField(required=False, write_only=True, allow_blank=True, max_length=200_000)


class PoolInput(StrictInput):
    gpu_product = serializers.CharField(max_length=128, required=False)
    gpu_memory_gb = serializers.IntegerField(min_value=1, max_value=1024, required=False)
    node_selector = serializers.DictField(child=serializers.CharField(max_length=253), required=False)
    tolerations = serializers.ListField(child=serializers.DictField(), required=False, max_length=32)
    gpu_count = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    hourly_price_per_gpu = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal("0"), required=False
    )
