"""Admin UI of tenancy: people and service principals, teams with members and quota inline."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

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


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
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
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # The slug names namespaces and gateway objects: immutable once created.
        return [*self.readonly_fields, "slug"] if obj is not None else self.readonly_fields

    @admin.display(description="members")
    def member_count(self, team: Team) -> int:
        return team.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["team", "user", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["team__slug", "user__username", "user__backstage_ref"]
    autocomplete_fields = ["team", "user"]


class GpuQuotaInline(admin.TabularInline):
    model = TeamGpuQuota
    extra = 1


@admin.register(TeamQuota)
class TeamQuotaAdmin(admin.ModelAdmin):
    list_display = ["team", "max_deployments", "tokens_per_minute", "tokens_per_day", "monthly_budget", "budget_policy"]
    list_filter = ["budget_policy"]
    search_fields = ["team__slug"]
    inlines = [GpuQuotaInline]
