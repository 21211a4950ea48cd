"""Input and output shapes of the catalog API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog import sizing
from catalog.contracts import VERSION_SERVING_MODES
from catalog.models import (
    Capability,
    CatalogModel,
    Hosting,
    Lifecycle,
    ModelPrice,
    ModelVersion,
    Provider,
    UsageType,
    Visibility,
)
from portal.api.serializers import QueryFilters, StrictInput


class CatalogModelListQuery(QueryFilters):
    capability = serializers.ChoiceField(choices=Capability.choices, required=False, allow_blank=True)
    hosting = serializers.ChoiceField(choices=Hosting.choices, required=False, allow_blank=True)
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, required=False, allow_blank=True)
    provider = serializers.ChoiceField(choices=Provider.choices, required=False, allow_blank=True)
    q = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Free text over name, publisher and description (its first 200 characters)",
    )


class HardwareOutput(serializers.Serializer):
    gpus_per_replica = serializers.IntegerField()
    min_gpu_memory_gb = serializers.IntegerField()
    cpu = serializers.CharField()
    memory = serializers.CharField()


class ArchitectureField(serializers.Serializer):
    parameters = serializers.IntegerField(min_value=1, max_value=10**14)
    weight_dtype = serializers.ChoiceField(choices=list(sizing.WEIGHT_DTYPE_BITS))
    layers = serializers.IntegerField(min_value=1, max_value=10_000)
    hidden_size = serializers.IntegerField(min_value=1, max_value=10**6)
    attention_heads = serializers.IntegerField(min_value=1, max_value=10_000)
    kv_heads = serializers.IntegerField(min_value=1, max_value=10_000)
    head_dim = serializers.IntegerField(min_value=1, max_value=100_000)
    attention = serializers.ChoiceField(choices=list(sizing.ATTENTION_KINDS))
    max_context = serializers.IntegerField(min_value=1, max_value=100_000_000)
    kv_lora_rank = serializers.IntegerField(min_value=0, max_value=100_000, required=False, default=0)
    qk_rope_head_dim = serializers.IntegerField(min_value=0, max_value=100_000, required=False, default=0)
    sliding_window = serializers.IntegerField(min_value=0, max_value=100_000_000, required=False, default=0)
    sliding_window_layers = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=10_000), required=False, default=list, max_length=10_000
    )


class ArchitectureInput(StrictInput, ArchitectureField):
    pass


class VersionSizingOutput(serializers.Serializer):
    weight_bytes = serializers.IntegerField()
    kv_cache_bytes_per_token = serializers.IntegerField(help_text="Every layer, KV cache in the model's dtype")
    kv_cache_bytes_per_token_fp8 = serializers.IntegerField()


def version_sizing(version: ModelVersion) -> dict[str, int] | None:
    if not version.architecture:
        return None
    architecture = sizing.architecture_from_dict(version.architecture)
    return {
        "weight_bytes": sizing.weight_bytes(architecture),
        "kv_cache_bytes_per_token": sizing.kv_bytes_per_token(architecture),
        "kv_cache_bytes_per_token_fp8": sizing.kv_bytes_per_token(architecture, "fp8"),
    }


class ModelVersionOutput(serializers.ModelSerializer):
    hardware = serializers.SerializerMethodField()
    serving_modes = serializers.ListField(child=serializers.ChoiceField(choices=VERSION_SERVING_MODES), read_only=True)
    architecture = serializers.SerializerMethodField()
    sizing = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "version",
            "lifecycle",
            "served_model_name",
            "artifact_uri",
            "revision",
            "format",
            "runtime",
            "hardware",
            "runtime_args",
            "provider",
            "provider_model_id",
            "architecture",
            "serving_modes",
            "sizing",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(ArchitectureField(allow_null=True))
    def get_architecture(self, version: ModelVersion) -> dict[str, object] | None:
        return dict(version.architecture) if version.architecture else None

    @extend_schema_field(VersionSizingOutput(allow_null=True))
    def get_sizing(self, version: ModelVersion) -> dict[str, int] | None:
        return version_sizing(version)

    @extend_schema_field(HardwareOutput(allow_null=True))
    def get_hardware(self, version: ModelVersion) -> dict[str, object] | None:
        if version.is_managed:
            return None
        return {
            "gpus_per_replica": version.gpus_per_replica,
            "min_gpu_memory_gb": version.min_gpu_memory_gb,
            "cpu": version.cpu,
            "memory": version.memory,
        }


class PriceOutput(serializers.ModelSerializer):
    price_per_million = serializers.DecimalField(max_digits=18, decimal_places=6, coerce_to_string=True)

    class Meta:
        model = ModelPrice
        fields = ["id", "usage_type", "price_per_million", "currency", "effective_from", "note"]


class ModelSizingOutput(serializers.Serializer):
    version = serializers.CharField()
    parameters = serializers.IntegerField()
    weight_dtype = serializers.CharField()
    attention = serializers.CharField()
    max_context = serializers.IntegerField()
    weight_bytes = serializers.IntegerField()
    kv_cache_bytes_per_token = serializers.IntegerField()


DEFAULT_VERSION_ORDER = (Lifecycle.APPROVED, Lifecycle.PREVIEW, Lifecycle.DEPRECATED)


def default_version(model: CatalogModel) -> ModelVersion | None:
    """The version a deployment gets when none is named: the newest approved, else preview, else deprecated."""
    versions = list(model.versions.all())
    for lifecycle in DEFAULT_VERSION_ORDER:
        found = sorted((v for v in versions if v.lifecycle == lifecycle), key=lambda v: v.created_at, reverse=True)
        if found:
            return found[0]
    return None


class CatalogModelSummaryOutput(serializers.ModelSerializer):
    sizing = serializers.SerializerMethodField(
        help_text="Sizing of the version deployed by default (self-hosted models with a known architecture)"
    )

    @extend_schema_field(ModelSizingOutput(allow_null=True))
    def get_sizing(self, model: CatalogModel) -> dict[str, object] | None:
        version = default_version(model) if model.hosting == Hosting.SELF_HOSTED else None
        if version is None or not version.architecture:
            return None
        architecture = sizing.architecture_from_dict(version.architecture)
        return {
            "version": version.version,
            "parameters": architecture.parameters,
            "weight_dtype": architecture.weight_dtype,
            "attention": architecture.attention,
            "max_context": architecture.max_context,
            "weight_bytes": sizing.weight_bytes(architecture),
            "kv_cache_bytes_per_token": sizing.kv_bytes_per_token(architecture),
        }

    class Meta:
        model = CatalogModel
        fields = [
            "slug",
            "display_name",
            "publisher",
            "description",
            "license",
            "capabilities",
            "context_window",
            "lifecycle",
            "hosting",
            "visibility",
            "sizing",
            "updated_at",
        ]


class CatalogModelDetailOutput(CatalogModelSummaryOutput):
    versions = ModelVersionOutput(many=True)
    prices = serializers.SerializerMethodField(help_text="Prices in force now, one per usage type")
    visible_to_teams = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)  # type: ignore[var-annotated]

    class Meta(CatalogModelSummaryOutput.Meta):
        fields = [*CatalogModelSummaryOutput.Meta.fields, "visible_to_teams", "versions", "prices"]

    @extend_schema_field(PriceOutput(many=True))
    def get_prices(self, model: CatalogModel) -> list[dict[str, object]]:
        return list(PriceOutput(self.context["prices_in_force"], many=True).data)


class CatalogModelCreateInput(StrictInput):
    slug = serializers.CharField(max_length=63)
    display_name = serializers.CharField(max_length=200)
    publisher = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10000, default="")
    license = serializers.CharField(max_length=100)
    capabilities = serializers.ListField(
        child=serializers.ChoiceField(choices=Capability.choices), min_length=1, max_length=5
    )
    context_window = serializers.IntegerField(min_value=1, max_value=100_000_000)
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, default=Lifecycle.PREVIEW)
    hosting = serializers.ChoiceField(choices=Hosting.choices)
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.ALL)
    visible_to_teams = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=1000
    )


class CatalogModelUpdateInput(StrictInput):
    display_name = serializers.CharField(max_length=200, required=False)
    publisher = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10000)
    license = serializers.CharField(max_length=100, required=False)
    capabilities = serializers.ListField(
        child=serializers.ChoiceField(choices=Capability.choices), min_length=1, max_length=5, required=False
    )
    context_window = serializers.IntegerField(min_value=1, max_value=100_000_000, required=False)
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, required=False)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    visible_to_teams = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=1000
    )


class ModelVersionCreateInput(StrictInput):
    version = serializers.CharField(max_length=64)
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, default=Lifecycle.PREVIEW)
    served_model_name = serializers.CharField(max_length=128)
    artifact_uri = serializers.CharField(max_length=500, required=False, default="")
    revision = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    format = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    runtime = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    gpus_per_replica = serializers.IntegerField(min_value=0, max_value=64, required=False, default=0)
    min_gpu_memory_gb = serializers.IntegerField(min_value=0, max_value=1024, required=False, default=0)
    cpu = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    memory = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    runtime_args = serializers.ListField(
        child=serializers.CharField(max_length=500), required=False, default=list, max_length=100
    )
    provider = serializers.ChoiceField(choices=Provider.choices, required=False, default="")
    provider_model_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    architecture = ArchitectureInput(required=False)
    hf_config = serializers.JSONField(
        required=False, help_text="The model's Hugging Face config.json, as an object or pasted as a string"
    )
    parameters = serializers.IntegerField(
        min_value=1, max_value=10**14, required=False, help_text="Parameter count, with hf_config when it cannot tell"
    )
    serving_modes = serializers.ListField(
        child=serializers.ChoiceField(choices=VERSION_SERVING_MODES),
        required=False,
        max_length=len(VERSION_SERVING_MODES),
        help_text="Serving modes the version is known to work in (self-hosted; default: standard)",
    )


class ModelVersionUpdateInput(StrictInput):
    lifecycle = serializers.ChoiceField(choices=Lifecycle.choices, required=False)
    served_model_name = serializers.CharField(max_length=128, required=False)
    artifact_uri = serializers.CharField(max_length=500, required=False)
    revision = serializers.CharField(max_length=100, required=False, allow_blank=True)
    format = serializers.CharField(max_length=32, required=False, allow_blank=True)
    runtime = serializers.CharField(max_length=64, required=False, allow_blank=True)
    gpus_per_replica = serializers.IntegerField(min_value=0, max_value=64, required=False)
    min_gpu_memory_gb = serializers.IntegerField(min_value=0, max_value=1024, required=False)
    cpu = serializers.CharField(max_length=16, required=False, allow_blank=True)
    memory = serializers.CharField(max_length=16, required=False, allow_blank=True)
    runtime_args = serializers.ListField(child=serializers.CharField(max_length=500), required=False, max_length=100)
    provider = serializers.ChoiceField(choices=Provider.choices, required=False)
    provider_model_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    architecture = ArchitectureInput(required=False)
    hf_config = serializers.JSONField(required=False)
    parameters = serializers.IntegerField(min_value=1, max_value=10**14, required=False)
    serving_modes = serializers.ListField(
        child=serializers.ChoiceField(choices=VERSION_SERVING_MODES),
        required=False,
        max_length=len(VERSION_SERVING_MODES),
    )


class PriceCreateInput(StrictInput):
    usage_type = serializers.ChoiceField(choices=UsageType.choices)
    price_per_million = serializers.DecimalField(
        max_digits=18, decimal_places=6, min_value=Decimal("0"), max_value=Decimal("1000000")
    )
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    effective_from = serializers.DateTimeField()
    note = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class FitInput(StrictInput):
    team = serializers.CharField(
        max_length=40, required=False, help_text="Size on the pools this team may use (its GPU quota); default: all"
    )
    cluster = serializers.CharField(max_length=40, required=False)
    accelerator_type = serializers.CharField(max_length=64, required=False)
    region = serializers.CharField(max_length=64, required=False)
    gpus_per_replica = serializers.IntegerField(
        min_value=1, max_value=64, required=False, help_text="Evaluate this many GPUs (tensor parallel) per replica"
    )
    context_length = serializers.IntegerField(
        min_value=1, max_value=100_000_000, required=False, help_text="Default: the version's --max_model_len"
    )
    concurrency = serializers.IntegerField(min_value=1, max_value=100_000, required=False, default=1)
    kv_cache_dtype = serializers.ChoiceField(choices=list(sizing.KV_CACHE_DTYPE_BYTES), required=False)
    min_replicas = serializers.IntegerField(min_value=1, max_value=64, required=False, default=1)
    gpu_memory_utilization_percent = serializers.IntegerField(
        min_value=10, max_value=100, required=False, help_text="Share of each GPU the model server uses (default 90)"
    )


class FitFiguresOutput(serializers.Serializer):
    gpu_memory_gb = serializers.IntegerField()
    tensor_parallel_size = serializers.IntegerField()
    usable_bytes_per_gpu = serializers.IntegerField()
    weight_bytes_per_gpu = serializers.IntegerField()
    kv_cache_bytes_per_gpu = serializers.IntegerField()
    needed_bytes_per_gpu = serializers.IntegerField()
    margin_bytes_per_gpu = serializers.IntegerField(help_text="Negative: the shortfall")
    fits = serializers.BooleanField()
    problem = serializers.CharField(allow_null=True)
    max_context_at_concurrency = serializers.IntegerField()
    max_concurrency_at_context = serializers.IntegerField()


class BreakEvenOutput(serializers.Serializer):
    model = serializers.CharField()
    blended_price_per_million = serializers.DecimalField(max_digits=18, decimal_places=6)
    monthly_tokens = serializers.IntegerField(
        allow_null=True, help_text="Above this many tokens a month the placement is cheaper"
    )


class PlacementOutput(serializers.Serializer):
    cluster = serializers.CharField()
    accelerator_type = serializers.CharField()
    gpus_per_replica = serializers.IntegerField()
    tensor_parallel_size = serializers.IntegerField()
    replicas = serializers.IntegerField()
    monthly_cost = serializers.DecimalField(max_digits=18, decimal_places=2)
    currency = serializers.CharField()
    fit = FitFiguresOutput()
    break_even = BreakEvenOutput(many=True)


class FitOutput(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.CharField()
    architecture = ArchitectureField()
    context_length = serializers.IntegerField()
    concurrency = serializers.IntegerField()
    kv_cache_dtype = serializers.CharField()
    gpu_memory_utilization_percent = serializers.IntegerField()
    overhead_bytes_per_gpu = serializers.IntegerField()
    weight_bytes = serializers.IntegerField()
    kv_cache_bytes_per_token = serializers.IntegerField()
    naive_kv_cache_bytes_per_token = serializers.IntegerField(help_text="The plain multi-head formula, for comparison")
    kv_cache_bytes = serializers.IntegerField(help_text="context_length x concurrency, one GPU")
    fits = serializers.BooleanField()
    evaluated = PlacementOutput(many=True, help_text="The pools asked for at gpus_per_replica")
    placements = PlacementOutput(many=True, help_text="Fitting placements, cheapest first")


def placement_data(placement: sizing.Placement, *, currency: str, architecture: sizing.Architecture) -> dict[str, Any]:
    result = placement.fit
    return {
        "cluster": placement.cluster,
        "accelerator_type": placement.accelerator_type,
        "gpus_per_replica": placement.gpus_per_replica,
        "tensor_parallel_size": placement.tensor_parallel_size,
        "replicas": placement.replicas,
        "monthly_cost": str(placement.monthly_cost),
        "currency": currency,
        "fit": {
            "gpu_memory_gb": result.gpu_memory_gb,
            "tensor_parallel_size": result.tensor_parallel_size,
            "usable_bytes_per_gpu": result.usable_bytes_per_gpu,
            "weight_bytes_per_gpu": result.weight_bytes_per_gpu,
            "kv_cache_bytes_per_gpu": result.kv_bytes_per_gpu,
            "needed_bytes_per_gpu": result.needed_bytes_per_gpu,
            "margin_bytes_per_gpu": result.margin_bytes_per_gpu,
            "fits": result.fits,
            "problem": sizing.tensor_parallel_problem(architecture, result.tensor_parallel_size),
            "max_context_at_concurrency": result.max_context_at_concurrency,
            "max_concurrency_at_context": result.max_concurrency_at_context,
        },
        "break_even": [
            {
                "model": item.model,
                "blended_price_per_million": str(item.blended_price_per_million.quantize(Decimal("0.000001"))),
                "monthly_tokens": item.monthly_tokens,
            }
            for item in placement.break_even
        ],
    }


def plan_data(plan: sizing.Plan, *, version: ModelVersion, currency: str) -> dict[str, Any]:
    architecture = plan.architecture
    return {
        "model": version.model.slug,
        "version": version.version,
        "architecture": architecture.to_dict(),
        "context_length": plan.context,
        "concurrency": plan.concurrency,
        "kv_cache_dtype": plan.kv_cache_dtype,
        "gpu_memory_utilization_percent": plan.engine.gpu_memory_utilization_percent,
        "overhead_bytes_per_gpu": plan.engine.overhead_bytes,
        "weight_bytes": plan.weight_bytes,
        "kv_cache_bytes_per_token": plan.kv_bytes_per_token,
        "naive_kv_cache_bytes_per_token": plan.naive_kv_bytes_per_token,
        "kv_cache_bytes": plan.kv_bytes,
        "fits": plan.fits,
        "evaluated": [placement_data(p, currency=currency, architecture=architecture) for p in plan.evaluated],
        "placements": [placement_data(p, currency=currency, architecture=architecture) for p in plan.placements],
    }
