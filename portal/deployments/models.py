"""A team's model deployment: the desired spec (with its generation) and the status observed on the cluster."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q

from portal.core.models import TimestampedModel
from portal.deployments.contracts import LLMD_MODE, SERVING_MODES, STANDARD_MODE

# An InferenceService name: ^[a-z]([-a-z0-9]*[a-z0-9])?$ (KServe), short enough for "<name>-predictor".
DEPLOYMENT_NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"


class Phase(models.TextChoices):
    PENDING = "Pending", "Pending"
    PROVISIONING = "Provisioning", "Provisioning"
    READY = "Ready", "Ready"
    DEGRADED = "Degraded", "Degraded"
    FAILED = "Failed", "Failed"
    DELETING = "Deleting", "Deleting"


class Deployment(TimestampedModel):
    team = models.ForeignKey("tenancy.Team", on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=40, validators=[RegexValidator(DEPLOYMENT_NAME_PATTERN)])
    model_version = models.ForeignKey("catalog.ModelVersion", on_delete=models.PROTECT, related_name="deployments")
    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.PROTECT, related_name="deployments")
    accelerator_type = models.CharField(max_length=64)
    # The name callers put in "model" and the name of the deployment's gateway objects: unique across teams by
    # construction (portal/deployments/names.py), and in the database.
    served_model_name = models.CharField(max_length=128)
    # Earlier names still routed to it (a deployment renamed by migration keeps its old name for its callers).
    served_model_aliases = models.JSONField(default=list, blank=True)
    min_replicas = models.PositiveSmallIntegerField(default=1)
    max_replicas = models.PositiveSmallIntegerField(default=1)
    scale_to_zero = models.BooleanField(default=False)
    gpus_per_replica = models.PositiveSmallIntegerField()
    runtime_args = models.JSONField(default=list, blank=True, help_text="Overrides appended to the version's defaults")
    model_cache = models.BooleanField(default=False)
    # How it is served (contracts.SERVING_MODES): a KServe InferenceService, or an llm-d LLMInferenceService whose
    # InferencePool the gateway routes to; the team picks within what the catalog version and the cluster allow.
    serving_mode = models.CharField(max_length=12, default=STANDARD_MODE)
    # llm-d only, prefill/decode disaggregation: prefill replicas (0: none) and GPUs of each (0: as a decode
    # replica's). The replicas above are then the decode replicas; both count in the quota and in GPU-hours.
    prefill_replicas = models.PositiveSmallIntegerField(default=0)
    prefill_gpus_per_replica = models.PositiveSmallIntegerField(default=0)
    # While a serving-mode switch is in flight, the GPUs the old mode's objects still hold beside the new mode's (the
    # reservation of the spec being left); 0 once the reconciler has pruned them. Admission counts them as held.
    switch_held_gpus = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Desired-state version: bumped by every spec change and by deletion; the reconciler records what it saw.
    generation = models.PositiveBigIntegerField(default=1)
    observed_generation = models.PositiveBigIntegerField(default=0)
    phase = models.CharField(max_length=12, choices=Phase.choices, default=Phase.PENDING)
    conditions = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    endpoint = models.CharField(max_length=500, blank=True)
    observed_replicas = models.PositiveSmallIntegerField(default=0)
    # llm-d with prefill/decode disaggregation: the prefill replicas seen serving (observed_replicas are the decode's).
    observed_prefill_replicas = models.PositiveSmallIntegerField(default=0)
    deletion_requested_at = models.DateTimeField(null=True, blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    # What the reconciler last applied (secrets redacted), served by `.../manifests`.
    applied_manifests = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["team__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="deployment_name_unique_per_team"),
            models.UniqueConstraint(fields=["served_model_name"], name="deployment_served_model_name_unique"),
            models.CheckConstraint(condition=Q(min_replicas__lte=F("max_replicas")), name="min_replicas_at_most_max"),
            models.CheckConstraint(condition=Q(max_replicas__gte=1), name="max_replicas_at_least_one"),
            models.CheckConstraint(condition=Q(gpus_per_replica__gte=1), name="deployment_uses_gpus"),
            models.CheckConstraint(
                condition=Q(observed_generation__lte=F("generation")), name="observed_generation_not_ahead"
            ),
            models.CheckConstraint(condition=Q(phase__in=Phase.values), name="deployment_phase_known"),
            models.CheckConstraint(condition=Q(serving_mode__in=SERVING_MODES), name="deployment_serving_mode_known"),
            models.CheckConstraint(
                condition=Q(serving_mode=LLMD_MODE) | (Q(prefill_replicas=0) & Q(prefill_gpus_per_replica=0)),
                name="prefill_only_in_llmd_mode",
            ),
        ]
        indexes = [models.Index(fields=["cluster", "accelerator_type"]), models.Index(fields=["phase"])]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.name}"


class ServedName(models.Model):
    """A name a deployment was served under, from when to when. Usage is attributed by the name the gateway
    reported at the event's time: late events of a deleted deployment, and a name reused by a new deployment of the
    same team, each find the deployment that really served them. Never deleted."""

    name = models.CharField(max_length=128)
    deployment_id = models.BigIntegerField()
    deployment_name = models.CharField(max_length=40)
    team_id = models.BigIntegerField()
    model_version_id = models.BigIntegerField()
    model_id = models.BigIntegerField()
    model_slug = models.CharField(max_length=63)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(valid_until__isnull=True), name="served_name_one_live_holder"
            ),
        ]
        indexes = [models.Index(fields=["deployment_id"])]

    def __str__(self) -> str:
        return f"{self.name} -> deployment {self.deployment_id}"


class ReplicaObservation(models.Model):
    """Replicas the reconciler saw serving, from when: appended each time the observed count changes, and a last
    0 when the deployment is gone. GPU-hours are the integral of this log, so a deployment is charged from the
    moment its replicas are observed, for every change between accrual runs, and until it is gone, even when it
    lived for less than an accrual interval. What the charge needs is copied in: the log outlives the deployment."""

    deployment_id = models.BigIntegerField()
    deployment_name = models.CharField(max_length=40)
    team_id = models.BigIntegerField()
    cluster_id = models.BigIntegerField()
    cluster_name = models.CharField(max_length=40)
    accelerator_type = models.CharField(max_length=64)
    gpus_per_replica = models.PositiveSmallIntegerField()
    replicas = models.PositiveIntegerField()
    # llm-d's prefill workload, charged beside the decode replicas above: its replicas seen serving and GPUs of each.
    prefill_replicas = models.PositiveIntegerField(default=0)
    prefill_gpus_per_replica = models.PositiveSmallIntegerField(default=0)
    observed_at = models.DateTimeField()

    class Meta:
        ordering = ["deployment_id", "observed_at", "id"]
        indexes = [
            models.Index(fields=["deployment_id", "observed_at"]),
            models.Index(fields=["observed_at"]),
        ]

    def __str__(self) -> str:
        return f"deployment {self.deployment_id}: {self.replicas} at {self.observed_at}"

    @property
    def gpus(self) -> int:
        """GPUs held while this observation stands: the decode replicas' and the prefill replicas', each at theirs."""
        return self.replicas * self.gpus_per_replica + self.prefill_replicas * self.prefill_gpus_per_replica


class DeploymentEvent(models.Model):
    """A change of phase (or a reconcile error) with its reason, for `.../events`."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    phase = models.CharField(max_length=12, choices=Phase.choices)
    reason = models.CharField(max_length=100)
    message = models.TextField(blank=True)
    generation = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"{self.phase} {self.reason}"
