"""Admin UI of tenancy: people and service principals; teams and quotas are written through the tenancy services
(validated, audited, as through the API); memberships are shown and changed through the API only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Case, QuerySet, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from portal.core.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceWriteAdmin, money, refusal
from portal.core.errors import DomainError
from portal.tenancy import services
from portal.tenancy.models import Membership, QuotaRequest, Team, TeamGpuQuota, TeamQuota, User


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


QUOTA_REQUEST_FIELDS = (
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
)


class QuotaDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")], widget=forms.RadioSelect)
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why: the team reads it with the decision (kept in the request and its audit entry).",
    )


@admin.register(QuotaRequest)
class QuotaRequestAdmin(ReadOnlyAdmin):
    """The quota-request queue: pending first; each pending request is approved or rejected with a note through the
    tenancy services, as `POST /api/v1/teams/{team}/quota-requests/{id}/approve|reject` does (validated, audited,
    and an approval applied to the team's quota)."""

    list_display = ["id", "team", "status", "gpus", "max_deployments", "requested_by", "created_at", "decide_link"]
    list_filter = ["status"]
    search_fields = ["team__slug", "reason", "decision_note"]
    list_select_related = ["team", "requested_by"]
    fields = QUOTA_REQUEST_FIELDS
    readonly_fields = QUOTA_REQUEST_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[QuotaRequest]:
        pending_first = Case(When(status=QuotaRequest.Status.PENDING, then=0), default=1)
        return super().get_queryset(request).order_by(pending_first, "-created_at", "-id")

    @admin.display(description="decision")
    def decide_link(self, row: QuotaRequest) -> str:
        if row.status != QuotaRequest.Status.PENDING:
            return "—"
        return format_html(
            '<a href="{}">Approve or reject</a>', reverse("admin:tenancy_quotarequest_decide", args=[row.pk])
        )

    def get_urls(self) -> list[URLPattern]:
        decide = path(
            "<int:request_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="tenancy_quotarequest_decide",
        )
        return [decide, *super().get_urls()]

    def decide_view(self, request: HttpRequest, request_id: int) -> HttpResponse:
        found = QuotaRequest.objects.select_related("team", "requested_by").filter(pk=request_id).first()
        if found is None:
            raise Http404(f"No quota request {request_id}")
        form = QuotaDecisionForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            decide = (
                services.quota_request_approve
                if form.cleaned_data["decision"] == "approve"
                else services.quota_request_reject
            )
            try:
                decided = decide(actor=request.user, request=found, note=form.cleaned_data["note"])  # type: ignore[arg-type]
            except DomainError as error:
                self.message_user(request, f"Not decided: {refusal(error)}", messages.ERROR)
            else:
                self.message_user(request, f"Quota request {decided.pk} of {decided.team.slug}: {decided.status}")
                return HttpResponseRedirect(reverse("admin:tenancy_quotarequest_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Decide quota request {found.pk} of {found.team.slug}",
            "quota_request": found,
            "quota": TeamQuota.objects.filter(team=found.team).prefetch_related("gpu_limits").first(),
            "form": form,
        }
        return TemplateResponse(request, "admin/tenancy/quotarequest/decide.html", context)
