"""Input and output shapes of the tenancy API."""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.serializers import QueryFilters, StrictInput
from portal.tenancy.contracts import SERVING_TIERS
from portal.tenancy.models import (
    TEAM_SLUG_PATTERN,
    TOKEN_LIMIT_MAX,
    Membership,
    QuotaRequest,
    Role,
    Team,
    TeamQuota,
    User,
)


class TeamOutput(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = [
            "slug",
            "display_name",
            "description",
            "backstage_group_ref",
            "cost_center",
            "status",
            "created_at",
            "updated_at",
        ]


class TeamListQuery(QueryFilters):
    status = serializers.ChoiceField(choices=Team.Status.choices, required=False, allow_blank=True)
    search = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Text in the slug or display name"
    )


class MemberListQuery(QueryFilters):
    role = serializers.ChoiceField(choices=Role.choices, required=False, allow_blank=True)


class QuotaRequestListQuery(QueryFilters):
    status = serializers.ChoiceField(choices=QuotaRequest.Status.choices, required=False, allow_blank=True)


class QuotaRequestQueueQuery(QueryFilters):
    status = serializers.ChoiceField(
        choices=QuotaRequest.Status.choices, required=False, allow_blank=True, help_text="default: pending"
    )


class TeamCreateInput(StrictInput):
    slug = serializers.RegexField(
        TEAM_SLUG_PATTERN,
        max_length=40,
        error_messages={
            "invalid": "must be a DNS-1123 label: lowercase letters, digits and '-', at most 40 characters"
        },
        help_text="DNS-1123 label, at most 40 characters; immutable",
    )
    display_name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    backstage_group_ref = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=255, default=None
    )
    cost_center = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)


class TeamUpdateInput(StrictInput):
    read_only_fields = ("slug",)

    display_name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    backstage_group_ref = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=255)
    cost_center = serializers.CharField(required=False, allow_blank=True, max_length=64)
    status = serializers.ChoiceField(required=False, choices=Team.Status.choices, help_text="Platform admins only")


class UserOutput(serializers.ModelSerializer):
    ref = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["ref", "username", "kind", "email", "is_staff"]

    def get_ref(self, user: User) -> str:
        return user.backstage_ref or user.username


class MembershipOutput(serializers.ModelSerializer):
    user = serializers.SerializerMethodField()
    team = serializers.CharField(source="team.slug")

    class Meta:
        model = Membership
        fields = ["team", "user", "role", "created_at"]

    def get_user(self, membership: Membership) -> str:
        return membership.user.backstage_ref or membership.user.username


class MembershipCreateInput(StrictInput):
    user = serializers.CharField(max_length=255, help_text="Backstage user ref, e.g. user:default/jane")
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateInput(StrictInput):
    role = serializers.ChoiceField(choices=Role.choices)


class TeamRoleOutput(serializers.Serializer):
    team = serializers.CharField()
    display_name = serializers.CharField()
    role = serializers.CharField()


class MeOutput(serializers.Serializer):
    user = UserOutput()
    platform_admin = serializers.BooleanField()
    acting_through = serializers.CharField(allow_null=True, help_text="Service principal acting on the user's behalf")
    scopes = serializers.ListField(child=serializers.CharField())
    backstage_user_token_required = serializers.BooleanField(
        help_text="Whether calls acting for a Backstage user must carry that user's Backstage token (X-Backstage-Token)"
    )
    teams = TeamRoleOutput(many=True)


class QuotaOutput(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    gpus = serializers.SerializerMethodField()
    gpu_borrowing_limits = serializers.SerializerMethodField()
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)

    class Meta:
        model = TeamQuota
        fields = [
            "team",
            "gpus",
            "max_deployments",
            "tokens_per_minute",
            "tokens_per_day",
            "monthly_budget",
            "budget_policy",
            "serving_tier",
            "gpu_borrowing_limits",
            "updated_at",
        ]

    def get_gpus(self, quota: TeamQuota) -> dict[str, int]:
        return {limit.accelerator_type: limit.gpus for limit in quota.gpu_limits.all()}

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_gpu_borrowing_limits(self, quota: TeamQuota) -> dict[str, int]:
        return {
            limit.accelerator_type: limit.borrowing_limit for limit in quota.gpu_limits.all() if limit.borrowing_limit
        }


class QuotaUpdateInput(StrictInput):
    gpus = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100_000),
        help_text="GPUs per accelerator type; replaces the whole map",
    )
    max_deployments = serializers.IntegerField(min_value=0, max_value=100_000)
    tokens_per_minute = serializers.IntegerField(min_value=0, max_value=TOKEN_LIMIT_MAX)
    tokens_per_day = serializers.IntegerField(min_value=0, max_value=TOKEN_LIMIT_MAX)
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=Decimal("0"))
    budget_policy = serializers.ChoiceField(choices=TeamQuota.BudgetPolicy.choices)
    serving_tier = serializers.ChoiceField(
        choices=SERVING_TIERS,
        required=False,
        help_text="Priority of the team's llm-d traffic on a shared pool (production over standard over batch)",
    )
    gpu_borrowing_limits = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100_000),
        required=False,
        help_text="Kueue clusters: GPUs per accelerator type the team may borrow from the cohort; replaces the map",
    )


class QuotaRequestOutput(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    requested_by = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()
    gpus = serializers.DictField(child=serializers.IntegerField())

    class Meta:
        model = QuotaRequest
        fields = [
            "id",
            "team",
            "status",
            "gpus",
            "max_deployments",
            "reason",
            "requested_by",
            "created_at",
            "decided_by",
            "decided_at",
            "decision_note",
        ]

    def get_requested_by(self, request: QuotaRequest) -> str:
        return str(request.requested_by)

    def get_decided_by(self, request: QuotaRequest) -> str | None:
        return str(request.decided_by) if request.decided_by is not None else None


class QuotaRequestCreateInput(StrictInput):
    gpus = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100_000),
        required=False,
        default=dict,
        help_text="GPUs wanted in total per accelerator type (types not named keep their limits)",
    )
    max_deployments = serializers.IntegerField(min_value=0, max_value=100_000, required=False, allow_null=True)
    reason = serializers.CharField(max_length=2000, help_text="What the quota is for, for the admin who decides")


class QuotaRequestDecisionInput(StrictInput):
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
