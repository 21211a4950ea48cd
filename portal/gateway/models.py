"""Gateway credentials (team API keys), one-time reveal links, team and cluster gateway policy state, and
managed provider backends."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q

from portal.core.models import TimestampedModel
from portal.tenancy.contracts import BUDGET_ENFORCEMENT_CHOICES, BudgetEnforcement

KEY_ID_PATTERN = r"^[0-9a-f]{12}$"
PROVIDER_BACKEND_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class Credential(TimestampedModel):
    """A team's API key at the gateway. The key itself is never stored in clear: a SHA-256 hash identifies
    it, and an encrypted copy exists only to be written into the gateway Secret."""

    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    # Lowercase hex, unique per issued key: the client id at the gateway is "<team-slug>.<key_id>".
    key_id = models.CharField(max_length=12, unique=True, validators=[RegexValidator(KEY_ID_PATTERN)])
    key_prefix = models.CharField(max_length=20)
    key_hash = models.CharField(max_length=64, unique=True)
    key_ciphertext = models.TextField()
    # Catalog model slugs; empty means every model the team may use.
    allowed_models = ArrayField(models.CharField(max_length=63), default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set on the old key of a rotation; it keeps working until its (shortened) expiry.
    rotated_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team__slug", "name", "-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(key_id__regex=KEY_ID_PATTERN), name="credential_key_id_is_hex"),
            models.UniqueConstraint(
                fields=["team", "name"],
                condition=Q(revoked_at__isnull=True, rotated_at__isnull=True),
                name="credential_name_unique_among_current_keys",
            ),
        ]
        indexes = [models.Index(fields=["team", "revoked_at", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.key_prefix} ({self.name})"


class CredentialReveal(models.Model):
    """A one-time link to read a new key: random token stored hashed, short-lived, for its creator only."""

    credential = models.ForeignKey(Credential, on_delete=models.CASCADE, related_name="reveals")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revealed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"reveal of {self.credential_id}"


class TeamGatewayPolicy(TimestampedModel):
    """Derived gateway state of a team that is not in its quota: the budget enforcement that applies now. This row
    is its one owner: the usage app's budget evaluation writes it (services.team_budget_enforcement_set) and reads
    it back (selectors.team_budget_enforcement); a month's BudgetState records only when it was enforced or lifted."""

    team = models.OneToOneField("tenancy.Team", on_delete=models.CASCADE, related_name="gateway_policy")
    budget_enforcement = models.CharField(
        max_length=10, choices=BUDGET_ENFORCEMENT_CHOICES, default=BudgetEnforcement.NONE.value
    )
    reason = models.CharField(max_length=500, blank=True)
    generation = models.PositiveBigIntegerField(default=1)

    class Meta:
        verbose_name = "team gateway policy"
        verbose_name_plural = "team gateway policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(budget_enforcement__in=[value.value for value in BudgetEnforcement]),
                name="budget_enforcement_known",
            ),
        ]

    def __str__(self) -> str:
        return f"gateway policy of {self.team_id}: {self.budget_enforcement}"


class ClusterGatewayPolicy(TimestampedModel):
    """The aggregate gateway policy of one cluster: rendered whole from the database, reconciled by id.

    `generation` is bumped by every change the portal knows of; the periodic resync also compares the
    fingerprint of the desired policy with `applied_fingerprint`, which catches changes made elsewhere
    (quota edits, team suspension, catalog changes) without those apps knowing about the gateway."""

    cluster = models.OneToOneField("clusters.Cluster", on_delete=models.CASCADE, related_name="gateway_policy")
    generation = models.PositiveBigIntegerField(default=1)
    observed_generation = models.PositiveBigIntegerField(default=0)
    applied_fingerprint = models.CharField(max_length=64, blank=True)
    phase = models.CharField(max_length=12, default="Pending")
    message = models.TextField(blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    # What the reconciler last applied, Secret values redacted.
    applied_manifests = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "cluster gateway policy"
        verbose_name_plural = "cluster gateway policies"
        ordering = ["cluster__name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(observed_generation__lte=F("generation")),
                name="gateway_observed_generation_not_ahead",
            ),
        ]

    def __str__(self) -> str:
        return f"gateway policy of cluster {self.cluster_id}"


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    AWS_BEDROCK = "aws-bedrock", "AWS Bedrock"
    AZURE_OPENAI = "azure-openai", "Azure OpenAI"


class ProviderBackend(TimestampedModel):
    """A managed provider endpoint on one cluster's gateway, with its upstream credential (encrypted)."""

    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.CASCADE, related_name="provider_backends")
    name = models.CharField(max_length=40, validators=[RegexValidator(PROVIDER_BACKEND_NAME_PATTERN)])
    provider = models.CharField(max_length=16, choices=ProviderKind.choices)
    hostname = models.CharField(max_length=253)
    port = models.PositiveIntegerField(default=443)
    region = models.CharField(max_length=64, blank=True, help_text="Provider region (required for AWS Bedrock)")
    api_version = models.CharField(max_length=40, blank=True, help_text="Azure OpenAI API version")
    credential_ciphertext = models.TextField(blank=True)

    class Meta:
        ordering = ["cluster__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "name"], name="provider_backend_name_unique_per_cluster"),
            models.UniqueConstraint(fields=["cluster", "provider"], name="one_provider_backend_per_provider"),
            models.CheckConstraint(condition=Q(provider__in=ProviderKind.values), name="provider_backend_known"),
            models.CheckConstraint(condition=Q(port__gte=1, port__lte=65535), name="provider_backend_port_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster_id}/{self.name}"
