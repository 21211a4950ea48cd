"""GPU clusters the portal provisions into, and their accelerator pools."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from portal.clusters.contracts import GPU_QUOTA_KINDS, KUEUE, RESOURCE_QUOTA
from portal.core.models import TimestampedModel

CLUSTER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
NAMESPACE_PREFIX_PATTERN = r"^([a-z0-9][-a-z0-9]{0,20})?$"


class Cluster(TimestampedModel):
    class AuthKind(models.TextChoices):
        KUBECONFIG = "kubeconfig", "Kubeconfig"
        TOKEN = "token", "Bearer token and CA bundle"

    class DeploymentMode(models.TextChoices):
        STANDARD = "Standard", "Standard (Deployment + HPA/KEDA)"
        KNATIVE = "Knative", "Knative (KPA, scale to zero)"

    class AutoscalerClass(models.TextChoices):
        HPA = "hpa", "HPA"
        KEDA = "keda", "KEDA"
        EXTERNAL = "external", "External"
        NONE = "none", "None"
        KPA = "kpa", "Knative KPA"

    class GpuQuota(models.TextChoices):
        RESOURCE_QUOTA = RESOURCE_QUOTA, "ResourceQuota"
        KUEUE = KUEUE, "Kueue"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        HEALTHY = "healthy", "Healthy"
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.CharField(max_length=40, unique=True, validators=[RegexValidator(CLUSTER_NAME_PATTERN)])
    display_name = models.CharField(max_length=200, blank=True)
    api_server = models.URLField(max_length=500, help_text="https://… of the Kubernetes API server")
    auth_kind = models.CharField(max_length=12, choices=AuthKind.choices)
    # Kubeconfig text, or {"token": …, "ca_bundle": …} as JSON, encrypted with portal.core.encryption.
    credentials_ciphertext = models.TextField()
    region = models.CharField(max_length=64)
    gateway_namespace = models.CharField(max_length=63, validators=[RegexValidator(DNS_LABEL_PATTERN)])
    gateway_name = models.CharField(max_length=63, validators=[RegexValidator(DNS_LABEL_PATTERN)])
    deployment_mode = models.CharField(max_length=10, choices=DeploymentMode.choices, default=DeploymentMode.STANDARD)
    autoscaler_class = models.CharField(max_length=10, choices=AutoscalerClass.choices, default=AutoscalerClass.KEDA)
    namespace_prefix = models.CharField(
        max_length=22, blank=True, default="genai-", validators=[RegexValidator(NAMESPACE_PREFIX_PATTERN)]
    )
    gateway_url = models.URLField(
        max_length=500, blank=True, help_text="Public base URL of the cluster's AI gateway, e.g. https://ai.example.com"
    )
    apply_gateway_bootstrap = models.BooleanField(
        default=False, help_text="Let the worker apply the gateway's own usage settings (GatewayConfig, EnvoyProxy)"
    )
    # The cluster runs the llm-d stack (KServe's LLMInferenceService controller and presets, the InferencePool CRD,
    # Envoy Gateway's InferencePool backends): its deployments may use the llm-d serving mode.
    runs_llmd = models.BooleanField(default=False)
    # How a team's GPUs are capped here: a ResourceQuota per team namespace, or Kueue (a ClusterQueue per team in one
    # cohort that lends idle GPUs; the cluster must run Kueue with resources.quotaCheckStrategy IgnoreUndeclared).
    gpu_quota = models.CharField(max_length=16, choices=GpuQuota.choices, default=GpuQuota.RESOURCE_QUOTA)
    health = models.CharField(max_length=12, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.CharField(max_length=500, blank=True)
    kubernetes_version = models.CharField(max_length=40, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(name__regex=CLUSTER_NAME_PATTERN), name="cluster_name_is_dns_label"),
            models.CheckConstraint(
                condition=(Q(deployment_mode="Knative") & Q(autoscaler_class="kpa"))
                | (Q(deployment_mode="Standard") & ~Q(autoscaler_class="kpa")),
                name="autoscaler_class_matches_deployment_mode",
            ),
            models.CheckConstraint(condition=Q(gpu_quota__in=GPU_QUOTA_KINDS), name="cluster_gpu_quota_known"),
        ]

    def __str__(self) -> str:
        return self.name


class AcceleratorPool(TimestampedModel):
    """GPUs of one type in one cluster: how to land on them, how many there are, and what they cost."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="pools")
    accelerator_type = models.CharField(max_length=64, validators=[RegexValidator(DNS_LABEL_PATTERN)])
    gpu_product = models.CharField(
        max_length=128, help_text="Value of the node label nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3"
    )
    node_selector = models.JSONField(default=dict, blank=True)
    tolerations = models.JSONField(default=list, blank=True)
    gpu_count = models.PositiveIntegerField(default=0, help_text="Allocatable GPUs, from the last inventory")
    gpu_memory_gb = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    hourly_price_per_gpu = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    inventory_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cluster__name", "accelerator_type"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "accelerator_type"], name="one_pool_per_cluster_and_type"),
            models.CheckConstraint(condition=Q(hourly_price_per_gpu__gte=0), name="gpu_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster.name}/{self.accelerator_type}"
