"""Catalog models, their versions (how to serve or reach them) and effective-dated prices."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from portal.core.models import TimestampedModel

MODEL_SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SERVED_MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,126}[A-Za-z0-9]$"
ARTIFACT_URI_PATTERN = r"^(hf|s3|gs|pvc|oci|https)://[^\s]+$"
KUBERNETES_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class Capability(models.TextChoices):
    CHAT = "chat", "Chat"
    COMPLETION = "completion", "Completion"
    EMBEDDINGS = "embeddings", "Embeddings"
    VISION = "vision", "Vision"
    TOOL_CALLING = "tool_calling", "Tool calling"


class Lifecycle(models.TextChoices):
    PREVIEW = "preview", "Preview"
    APPROVED = "approved", "Approved"
    DEPRECATED = "deprecated", "Deprecated"
    RETIRED = "retired", "Retired"


class Hosting(models.TextChoices):
    SELF_HOSTED = "self_hosted", "Self-hosted"
    MANAGED = "managed", "Managed provider"


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    AWS_BEDROCK = "aws-bedrock", "AWS Bedrock"
    AZURE_OPENAI = "azure-openai", "Azure OpenAI"


class Visibility(models.TextChoices):
    ALL = "all", "All teams"
    TEAMS = "teams", "Listed teams only"


class UsageType(models.TextChoices):
    INPUT = "input", "Input (uncached)"
    CACHED_INPUT = "cached_input", "Cached input"
    CACHE_WRITE = "cache_write", "Cache write"
    OUTPUT = "output", "Output"
    REASONING = "reasoning", "Reasoning"


class CatalogModel(TimestampedModel):
    slug = models.CharField(max_length=63, unique=True, validators=[RegexValidator(MODEL_SLUG_PATTERN)])
    display_name = models.CharField(max_length=200)
    publisher = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    license = models.CharField(max_length=100)
    capabilities = ArrayField(models.CharField(max_length=20, choices=Capability.choices), default=list)
    context_window = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    lifecycle = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.PREVIEW)
    hosting = models.CharField(max_length=12, choices=Hosting.choices)
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.ALL)
    visible_to_teams = models.ManyToManyField("tenancy.Team", blank=True, related_name="+")

    class Meta:
        ordering = ["slug"]
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(condition=Q(slug__regex=MODEL_SLUG_PATTERN), name="catalog_model_slug_is_dns_label"),
            models.CheckConstraint(condition=Q(context_window__gte=1), name="context_window_positive"),
            models.CheckConstraint(
                condition=Q(capabilities__contained_by=Capability.values), name="catalog_model_capabilities_known"
            ),
            models.CheckConstraint(condition=Q(lifecycle__in=Lifecycle.values), name="catalog_model_lifecycle_known"),
            models.CheckConstraint(condition=Q(hosting__in=Hosting.values), name="catalog_model_hosting_known"),
        ]

    def __str__(self) -> str:
        return self.slug


def default_serving_modes() -> list[str]:
    return ["standard"]


class ModelVersion(TimestampedModel):
    """One servable version: an artifact to run on our GPUs, or a provider's model id to route to."""

    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64, validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")])
    lifecycle = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.PREVIEW)
    served_model_name = models.CharField(max_length=128, validators=[RegexValidator(SERVED_MODEL_NAME_PATTERN)])
    # Self-hosted serving profile.
    artifact_uri = models.CharField(max_length=500, blank=True, validators=[RegexValidator(ARTIFACT_URI_PATTERN)])
    revision = models.CharField(max_length=100, blank=True)
    format = models.CharField(max_length=32, blank=True, help_text="Model format, e.g. huggingface")
    runtime = models.CharField(max_length=64, blank=True, help_text="KServe serving runtime")
    gpus_per_replica = models.PositiveSmallIntegerField(default=0)
    min_gpu_memory_gb = models.PositiveSmallIntegerField(default=0)
    cpu = models.CharField(max_length=16, blank=True, validators=[RegexValidator(KUBERNETES_QUANTITY_PATTERN)])
    memory = models.CharField(max_length=16, blank=True, validators=[RegexValidator(KUBERNETES_QUANTITY_PATTERN)])
    runtime_args = models.JSONField(default=list, blank=True, help_text="Default runtime arguments (a list of strings)")
    # What right-sizing needs (catalog/sizing.py Architecture.to_dict); empty: not known, the hardware profile rules.
    architecture = models.JSONField(default=dict, blank=True)
    # The serving modes this version is known to work in ("standard", "llm-d"), as the curator declared.
    serving_modes = models.JSONField(default=default_serving_modes, blank=True)
    # Managed provider.
    provider = models.CharField(max_length=16, choices=Provider.choices, blank=True)
    provider_model_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["model__slug", "version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="one_version_label_per_model"),
            models.CheckConstraint(
                condition=(Q(provider="") & Q(provider_model_id="") & ~Q(artifact_uri=""))
                | (~Q(provider="") & ~Q(provider_model_id="") & Q(artifact_uri="") & Q(gpus_per_replica=0)),
                name="version_is_self_hosted_or_managed",
            ),
            models.CheckConstraint(condition=Q(lifecycle__in=Lifecycle.values), name="model_version_lifecycle_known"),
        ]

    def __str__(self) -> str:
        return f"{self.model.slug}@{self.version}"

    @property
    def is_managed(self) -> bool:
        return bool(self.provider)


class ModelPrice(TimestampedModel):
    """A price per 1M tokens of one usage type, in force from `effective_from` until the next one.

    Intervals are implied by the next row's start, so prices of one model and usage type can never
    overlap; the unique constraint keeps two rows from starting at the same instant.
    """

    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="prices")
    usage_type = models.CharField(max_length=16, choices=UsageType.choices)
    price_per_million = models.DecimalField(max_digits=18, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD", validators=[RegexValidator(r"^[A-Z]{3}$")])
    effective_from = models.DateTimeField()
    note = models.CharField(max_length=255, blank=True, help_text="Where the price comes from")

    class Meta:
        ordering = ["model__slug", "usage_type", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "usage_type", "effective_from"], name="one_price_per_model_usage_type_and_start"
            ),
            models.CheckConstraint(condition=Q(price_per_million__gte=0), name="price_not_negative"),
            models.CheckConstraint(condition=Q(usage_type__in=UsageType.values), name="price_usage_type_known"),
        ]
        indexes = [models.Index(fields=["model", "usage_type", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.model.slug} {self.usage_type} {self.price_per_million} {self.currency}/1M from {self.effective_from:%Y-%m-%d}"
