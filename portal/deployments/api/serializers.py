"""Shapes of the deployments API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.serializers import KubernetesConditionOutput, KubernetesObjectField, QueryFilters, StrictInput
from portal.deployments.contracts import SERVING_MODES
from portal.deployments.models import DEPLOYMENT_NAME_PATTERN, Deployment, DeploymentEvent, Phase


class DeploymentListQuery(QueryFilters):
    phase = serializers.ChoiceField(choices=Phase.choices, required=False, allow_blank=True)


class DeploymentStatusOutput(serializers.Serializer):
    phase = serializers.CharField()
    observed_generation = serializers.IntegerField()
    conditions = KubernetesConditionOutput(many=True)
    message = serializers.CharField()
    endpoint = serializers.CharField()
    observed_replicas = serializers.IntegerField()
    last_reconciled_at = serializers.DateTimeField(allow_null=True)


class DeploymentOutput(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    model = serializers.CharField(source="model_version.model.slug")
    version = serializers.CharField(source="model_version.version")
    cluster = serializers.CharField(source="cluster.name")
    status = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "name",
            "team",
            "model",
            "version",
            "cluster",
            "accelerator_type",
            "served_model_name",
            "min_replicas",
            "max_replicas",
            "scale_to_zero",
            "gpus_per_replica",
            "runtime_args",
            "model_cache",
            "serving_mode",
            "prefill_replicas",
            "prefill_gpus_per_replica",
            "generation",
            "status",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(DeploymentStatusOutput)
    def get_status(self, deployment: Deployment) -> dict[str, object]:
        return {
            "phase": deployment.phase,
            "observed_generation": deployment.observed_generation,
            "conditions": deployment.conditions,
            "message": deployment.message,
            "endpoint": deployment.endpoint,
            "observed_replicas": deployment.observed_replicas,
            "last_reconciled_at": deployment.last_reconciled_at,
        }


class DeploymentCreateInput(StrictInput):
    name = serializers.RegexField(DEPLOYMENT_NAME_PATTERN, max_length=40)
    model = serializers.CharField(max_length=63, help_text="Catalog model slug")
    version = serializers.CharField(max_length=64, required=False, help_text="Default: the newest approved version")
    cluster = serializers.CharField(max_length=40, required=False)
    accelerator_type = serializers.CharField(max_length=64, required=False)
    region = serializers.CharField(max_length=64, required=False)
    min_replicas = serializers.IntegerField(min_value=0, max_value=64, default=1)
    max_replicas = serializers.IntegerField(min_value=1, max_value=64, default=1)
    scale_to_zero = serializers.BooleanField(default=False)
    runtime_args = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list, max_length=20
    )
    model_cache = serializers.BooleanField(default=False)
    gpus_per_replica = serializers.IntegerField(
        min_value=1,
        max_value=64,
        required=False,
        help_text="Default: the fewest GPUs that hold the model (its sizing), else the catalog's hardware profile",
    )
    serving_mode = serializers.ChoiceField(
        choices=SERVING_MODES,
        default="standard",
        help_text="standard: a KServe InferenceService; llm-d: an LLMInferenceService whose InferencePool the gateway "
        "routes to with LLM-aware endpoint picking (the catalog version and the cluster must allow it)",
    )
    prefill_replicas = serializers.IntegerField(
        min_value=0, max_value=64, default=0, help_text="llm-d only: prefill replicas (prefill/decode disaggregation)"
    )
    prefill_gpus_per_replica = serializers.IntegerField(
        min_value=0,
        max_value=64,
        default=0,
        help_text="llm-d only: GPUs of each prefill replica (0: as a decode replica)",
    )


class DeploymentUpdateInput(StrictInput):
    min_replicas = serializers.IntegerField(min_value=0, max_value=64, required=False)
    max_replicas = serializers.IntegerField(min_value=1, max_value=64, required=False)
    scale_to_zero = serializers.BooleanField(required=False)
    runtime_args = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=20)
    serving_mode = serializers.ChoiceField(
        choices=SERVING_MODES,
        required=False,
        help_text="standard: a KServe InferenceService; llm-d: an LLMInferenceService whose InferencePool the gateway "
        "routes to with LLM-aware endpoint picking (the catalog version and the cluster must allow it)",
    )
    prefill_replicas = serializers.IntegerField(
        min_value=0,
        max_value=64,
        required=False,
        help_text="llm-d only: prefill replicas (prefill/decode disaggregation)",
    )
    prefill_gpus_per_replica = serializers.IntegerField(
        min_value=0,
        max_value=64,
        required=False,
        help_text="llm-d only: GPUs of each prefill replica (0: as a decode replica)",
    )


class DeploymentCreatedOutput(DeploymentOutput):
    warnings = serializers.ListField(child=serializers.CharField(), help_text="Also in the Warning header")

    class Meta(DeploymentOutput.Meta):
        fields = [*DeploymentOutput.Meta.fields, "warnings"]


class ManifestsOutput(serializers.ListSerializer):  # type: ignore[type-arg]
    """What the portal applied for a deployment, secrets redacted."""

    child = KubernetesObjectField()


class DeploymentEventOutput(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["occurred_at", "phase", "reason", "message", "generation"]
