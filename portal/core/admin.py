"""Admin UI of the audit log (read-only, searchable), and the rules every app's admin follows: a write goes through
the app's service (validated, audited, nudging reconcilers) or the model is read-only there; money shows with its
currency."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from portal.core.errors import DomainError, ValidationFailed
from portal.core.models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Shown, never written here: the API's services own every change to it."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceWriteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """An admin whose saves call the app's service, as the API does: the same validation, the same audit entry, the
    same nudge to the reconcilers. A refused change (a domain error) is shown as a message and saves nothing: the
    whole request's transaction is rolled back. Deleting is not offered; subclasses give the services to call."""

    # The services a subclass hands its writes to, as methods; left None, the admin does not offer that write (no
    # add button without service_create; a change without service_update is refused, unless save_model is the
    # subclass's own, as for a quota saved together with its inline).
    service_create: Callable[[HttpRequest, dict[str, Any]], models.Model] | None = None
    service_update: Callable[[HttpRequest, Any, dict[str, Any]], models.Model] | None = None

    def can_create(self) -> bool:
        return self.service_create is not None

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.can_create() and super().has_add_permission(request, *args)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def form_values(self, form: Any, *, only_changed: bool) -> dict[str, Any]:
        names = form.changed_data if only_changed else list(form.cleaned_data)
        return {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            # The service reads the row as stored (its audit 'before'), not the instance the form already changed.
            current = type(obj)._default_manager.get(pk=obj.pk)
            changes = self.form_values(form, only_changed=True)
            if changes and self.service_update is None:
                raise PermissionDenied(f"{type(self).__name__} does not change {type(obj).__name__} rows")
            saved = self.service_update(request, current, changes) if self.service_update and changes else current
        else:
            if self.service_create is None:
                raise PermissionDenied(f"{type(self).__name__} does not add {type(obj).__name__} rows")
            saved = self.service_create(request, self.form_values(form, only_changed=False))
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Many-to-many fields and inlines are the service's business too: subclasses hand them to it. Nothing is
        saved here; the admin's change message reads what each inline saved, which is nothing."""
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            self.message_user(request, f"Not saved: {refusal(error)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def refusal(error: DomainError) -> str:
    if isinstance(error, ValidationFailed):
        return "; ".join(
            f"{problem.field}: {problem.message}" if problem.field else problem.message for problem in error.problems
        )
    return error.detail


def money(amount: Decimal | int | None, currency: str | None = None) -> str:
    """An amount with its currency: cents for amounts of a unit or more, up to six significant decimals below
    (token prices and per-request costs are fractions of a cent), thousands grouped: '1,234.50 USD', '0.0012 USD'."""
    currency = currency or settings.PORTAL_CURRENCY
    if amount is None:
        return "-"
    value = Decimal(amount)
    if value == 0 or abs(value) >= 1:
        text = f"{value.quantize(Decimal('0.01')):,}"
    else:
        places = max(2, min(12, -value.copy_abs().adjusted() + 1))  # two significant digits of a small amount
        text = f"{value.quantize(Decimal(1).scaleb(-places)).normalize():,f}"
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction.ljust(2, '0')}"
    return f"{text} {currency}"


def percent(part: Decimal | int | None, whole: Decimal | int | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{(Decimal(part) * 100 / Decimal(whole)).quantize(Decimal('0.1'))} %"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "actor_label", "action", "target_type", "target_label", "team_slug"]
    list_filter = ["action", "target_type", "occurred_at"]
    search_fields = ["actor_label", "action", "target_label", "team_slug", "target_id"]
    date_hierarchy = "occurred_at"
