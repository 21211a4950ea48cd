"""Users, teams, memberships and team quotas."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from portal.core.models import TimestampedModel
from portal.tenancy.contracts import ALERT_ONLY, SERVING_TIERS, STANDARD_TIER, BudgetEnforcement

# DESIGN.md: a team slug is a DNS-1123 label of at most 40 characters (it becomes part of a namespace).
TEAM_SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
# Names the portal writes for itself in a cluster's shared gateway namespace start with this (key Secrets, policies,
# managed routes, provider backends); a team slug may not, so no deployment's objects can collide with them
# (portal/deployments/names.py).
TEAM_SLUG_RESERVED_PREFIX = "genai-portal"
# The most tokens per minute or per day a gateway can hold: Envoy Gateway's rate-limit `requests` is a uint32
# (shared/reference/usage-metering.md section 1.5).
TOKEN_LIMIT_MAX = 4_294_967_295
# Backstage compares entity refs ignoring case and writes them in lowercase (stringifyEntityRef: relations,
# the `sub` of user tokens), so the portal stores them in lowercase only: one entity, one stored ref.
BACKSTAGE_USER_REF_PATTERN = r"^user:[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"
BACKSTAGE_GROUP_REF_PATTERN = r"^group:[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"
ACCELERATOR_TYPE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$"


class User(AbstractUser):
    """A person (from Backstage or created by an admin) or a service principal (Backstage, a collector)."""

    class Kind(models.TextChoices):
        PERSON = "person", "Person"
        SERVICE = "service", "Service principal"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PERSON)
    backstage_ref = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        unique=True,
        validators=[RegexValidator(BACKSTAGE_USER_REF_PATTERN)],
        help_text="The Backstage user entity ref, e.g. user:default/jane",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="person") | Q(backstage_ref__isnull=True),
                name="service_principal_has_no_backstage_ref",
            ),
            models.CheckConstraint(
                condition=Q(kind="person") | Q(is_staff=False, is_superuser=False),
                name="service_principal_is_not_staff",
            ),
            models.CheckConstraint(
                condition=Q(backstage_ref__isnull=True) | Q(backstage_ref=Lower("backstage_ref")),
                name="backstage_ref_is_lowercase",
            ),
        ]

    def __str__(self) -> str:
        return self.backstage_ref or self.username


class Team(TimestampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.CharField(max_length=40, unique=True, validators=[RegexValidator(TEAM_SLUG_PATTERN)])
    display_name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Unique ignoring case (a constraint below): Backstage matches groups ignoring case, so two teams must
    # never follow case variants of one group.
    # NULL, not "", for no group: the unique constraint must not count unlinked teams.
    backstage_group_ref = models.CharField(  # noqa: DJ001
        max_length=255, null=True, blank=True, validators=[RegexValidator(BACKSTAGE_GROUP_REF_PATTERN)]
    )
    cost_center = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    members = models.ManyToManyField(User, through="Membership", related_name="teams")  # type: ignore[var-annotated]

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(slug__regex=TEAM_SLUG_PATTERN), name="team_slug_is_dns_label"),
            models.CheckConstraint(
                condition=~Q(slug__startswith=TEAM_SLUG_RESERVED_PREFIX), name="team_slug_not_reserved"
            ),
            models.UniqueConstraint(
                Lower("backstage_group_ref"),
                name="one_team_per_backstage_group",
                violation_error_message="Another team is linked to this Backstage group.",
            ),
            models.CheckConstraint(
                condition=Q(backstage_group_ref__isnull=True) | Q(backstage_group_ref=Lower("backstage_group_ref")),
                name="backstage_group_ref_is_lowercase",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"


# What each role may do includes what the roles below it may do.
ROLE_RANK = {Role.VIEWER: 1, Role.DEVELOPER: 2, Role.ADMIN: 3}


class Membership(TimestampedModel):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)

    class Meta:
        ordering = ["team__slug", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_user_and_team"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} as {self.role}"


class TeamQuota(TimestampedModel):
    class BudgetPolicy(models.TextChoices):
        """What a spent budget brings: an alert only, or an alert and the enforcement of the same name
        (contracts.enforcement_when_spent)."""

        ALERT = ALERT_ONLY, "Alert only"
        THROTTLE = BudgetEnforcement.THROTTLE.value, "Throttle"
        BLOCK = BudgetEnforcement.BLOCK.value, "Block"

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="quota")
    max_deployments = models.PositiveIntegerField()
    tokens_per_minute = models.PositiveBigIntegerField()
    tokens_per_day = models.PositiveBigIntegerField()
    monthly_budget = models.DecimalField(max_digits=14, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    budget_policy = models.CharField(max_length=10, choices=BudgetPolicy.choices)
    # The priority of the team's llm-d traffic on a shared pool (contracts.SERVING_TIER_PRIORITIES), set by a
    # platform admin.
    serving_tier = models.CharField(max_length=12, default=STANDARD_TIER)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(monthly_budget__gte=0), name="monthly_budget_not_negative"),
            models.CheckConstraint(condition=Q(serving_tier__in=SERVING_TIERS), name="team_serving_tier_known"),
        ]

    def __str__(self) -> str:
        return f"quota of {self.team}"


class TeamGpuQuota(models.Model):
    """GPUs of one accelerator type a team may hold across all clusters."""

    quota = models.ForeignKey(TeamQuota, on_delete=models.CASCADE, related_name="gpu_limits")
    accelerator_type = models.CharField(max_length=64, validators=[RegexValidator(ACCELERATOR_TYPE_PATTERN)])
    gpus = models.PositiveIntegerField()
    # Kueue clusters only: GPUs of this type the team may borrow from the cohort beyond `gpus` (a platform admin's
    # choice; 0: none).
    borrowing_limit = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "team GPU quota"
        verbose_name_plural = "team GPU quotas"
        ordering = ["accelerator_type"]
        constraints = [
            models.UniqueConstraint(fields=["quota", "accelerator_type"], name="one_gpu_limit_per_accelerator_type"),
        ]

    def __str__(self) -> str:
        return f"{self.gpus} x {self.accelerator_type}"


class QuotaRequest(TimestampedModel):
    """A team's self-service ask for more GPUs (and deployments); a platform admin approves or rejects it, and an
    approval applies it to the team's quota. One pending request per team at a time."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quota_requests")
    requested_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    # {accelerator type: GPUs wanted in total}: only the types named change on approval, the others stay.
    gpus = models.JSONField(default=dict)
    max_deployments = models.PositiveIntegerField(null=True, blank=True)
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team"],
                condition=Q(status="pending"),
                name="one_pending_quota_request_per_team",
                violation_error_message="The team already has a pending quota request.",
            ),
            models.CheckConstraint(
                condition=Q(status="pending") | Q(decided_at__isnull=False),
                name="decided_quota_request_has_decision_time",
            ),
        ]

    def __str__(self) -> str:
        return f"quota request {self.pk} of {self.team}"


# For the OpenAPI schema's enum names (SPECTACULAR_SETTINGS ENUM_NAME_OVERRIDES import a module-level name): two
# `status` choice sets live in this app's API now, a team's and a quota request's.
TeamStatus = Team.Status
QuotaRequestStatus = QuotaRequest.Status
