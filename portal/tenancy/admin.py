"""Admin UI of tenancy: people and service principals; teams and quotas are written through the tenancy services
(validated, audited, as through the API); memberships are shown and changed through the API only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from portal.core.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceWriteAdmin, money
from portal.tenancy import services
from portal.tenancy.models import Membership, Team, TeamGpuQuota, TeamQuota, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "backstage_ref", "kind", "email", "is_staff", "is_active", "last_login"]
    list_filter = ["kind", "is_staff", "is_active"]
    search_fields = ["username", "backstage_ref", "email", "first_name", "last_name"]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,  # type: ignore[misc]
        ("Portal", {"fields": ("kind", "backstage_ref")}),
    )


class MembershipInline(ReadOnlyInline):
    """Roles change through the API: it keeps every team with an admin and audits each change."""

    model = Membership
    fields = ["user", "role", "created_at"]
    readonly_fields = ["user", "role", "created_at"]


@admin.register(Team)
class TeamAdmin(ServiceWriteAdmin):
    list_display = [
        "slug",
        "display_name",
        "status",
        "backstage_group_ref",
        "cost_center",
        "member_count",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["slug", "display_name", "backstage_group_ref", "cost_center"]
    fields = ["slug", "display_name", "description", "backstage_group_ref", "cost_center", "status", "created_at"]
    readonly_fields = ["created_at"]
    inlines = [MembershipInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # The slug names namespaces and gateway objects: immutable once created. A new team starts active.
        return [*self.readonly_fields, "slug"] if obj is not None else [*self.readonly_fields, "status"]

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> Team:
        values.pop("status", None)
        return services.team_create(actor=request.user, add_actor_as_admin=False, **values)  # type: ignore[arg-type]

    def service_update(self, request: HttpRequest, current: Team, changes: dict[str, Any]) -> Team:
        status = changes.pop("status", None)
        team = services.team_update(actor=request.user, team=current, changes=changes) if changes else current  # type: ignore[arg-type]
        if status is not None:
            team = services.team_set_status(actor=request.user, team=team, status=status)  # type: ignore[arg-type]
        return team

    @admin.display(description="members")
    def member_count(self, team: Team) -> int:
        return team.memberships.count()


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["team", "user", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["team__slug", "user__username", "user__backstage_ref"]


class GpuQuotaInline(admin.TabularInline):  # type: ignore[type-arg]
    """Read by TeamQuotaAdmin.save_related and written whole as the quota's `gpus` map through the service."""

    model = TeamGpuQuota
    extra = 1


@admin.register(TeamQuota)
class TeamQuotaAdmin(ServiceWriteAdmin):
    list_display = ["team", "max_deployments", "tokens_per_minute", "tokens_per_day", "budget", "budget_policy"]
    list_filter = ["budget_policy"]
    search_fields = ["team__slug"]
    fields = [
        "team",
        "max_deployments",
        "tokens_per_minute",
        "tokens_per_day",
        "monthly_budget",
        "budget_policy",
        "serving_tier",
    ]
    readonly_fields = ["team"]
    inlines = [GpuQuotaInline]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # One service call for the limits and the GPU map together, once the inline is read (save_related).
        form.portal_changes = self.form_values(form, only_changed=True)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        changes = dict(getattr(form, "portal_changes", {}))
        for formset in formsets:
            if formset.model is TeamGpuQuota and formset.has_changed():
                rows = [
                    row.cleaned_data
                    for row in formset.forms
                    if row.cleaned_data
                    and not row.cleaned_data.get("DELETE")
                    and row.cleaned_data.get("accelerator_type")
                ]
                changes["gpus"] = {row["accelerator_type"]: row["gpus"] for row in rows}
                changes["gpu_borrowing_limits"] = {
                    row["accelerator_type"]: row.get("borrowing_limit") or 0 for row in rows
                }
        if changes:
            quota = TeamQuota.objects.select_related("team").get(pk=form.instance.pk)
            services.team_quota_update(actor=request.user, team=quota.team, changes=changes)  # type: ignore[arg-type]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # every team gets its quota when it is created

    @admin.display(description="monthly budget", ordering="monthly_budget")
    def budget(self, quota: TeamQuota) -> str:
        return money(quota.monthly_budget)
