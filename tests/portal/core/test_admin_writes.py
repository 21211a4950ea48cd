"""The admin web UI writes through the same rules as the API: an edit goes through the app's service (validated,
audited, with the same nudges to the reconcilers as the same edit through the API), or the model is read-only there.
Money shows with its currency, budgets with how much of them is spent."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from portal.core.admin import money, percent
from portal.core.models import AuditEvent
from portal.core.queues import celery_queues
from portal.deployments.models import Deployment, DeploymentEvent
from portal.tenancy.models import TOKEN_LIMIT_MAX, Membership, Team, TeamQuota
from portal.usage.models import BudgetState
from tests.conftest import RoleMatrix
from tests.factories import (
    AcceleratorPoolFactory,
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    SelfHostedVersionFactory,
    TeamFactory,
    UserFactory,
)


@pytest.fixture
def staff(db: None) -> Client:
    user = UserFactory(username="root-admin", backstage_ref=None, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def broker() -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """The task messages waiting in the broker (every queue the portal sends to), as (task, args)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(*celery_queues())

    def queued() -> list[tuple[str, str]]:
        messages = [json.loads(raw) for queue in celery_queues() for raw in client.lrange(queue, 0, -1)]
        return sorted((message["headers"]["task"], message["headers"]["argsrepr"]) for message in messages)

    yield queued
    client.delete(*celery_queues())


def _form(client: Client, url: str) -> dict[str, Any]:
    """The change form as the browser would post it back: every field's current value, inline management forms."""
    response = client.get(url)
    assert response.status_code == 200, url
    context = response.context
    form = context["adminform"].form
    data: dict[str, Any] = {}
    for name in form.fields:
        value = form[name].value()  # as the widget renders it: JSON as text, related objects as their keys
        data[name] = "" if value is None else value
    for formset in context.get("inline_admin_formsets", []):
        management = formset.formset.management_form
        for name in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS"):
            data[f"{management.prefix}-{name}"] = management.initial.get(name, 0)
        for index, row in enumerate(formset.formset.forms[: management.initial.get("INITIAL_FORMS", 0)]):
            for name in row.fields:
                value = row[name].value()
                data[f"{row.prefix}-{name}"] = "" if value is None else value
            del index
    return data


def _errors(response: Any) -> object:
    """Why the admin re-rendered the form instead of saving: the form's and the inlines' errors."""
    if response.context is None or "adminform" not in response.context:
        return response.status_code
    inlines = [formset.formset.errors for formset in response.context.get("inline_admin_formsets", [])]
    return response.context["adminform"].form.errors, inlines


def _audits(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


# --- written through the service --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_quota_edit_in_the_admin_is_the_services_edit(
    staff: Client, django_capture_on_commit_callbacks: Any, broker: Callable[[], list[tuple[str, str]]]
) -> None:
    """The issue's example: a quota edited in the admin saved, the API showed it, and the audit log had nothing."""
    team = TeamFactory(slug="alpha")
    quota = TeamQuota.objects.get(team=team)
    url = reverse("admin:tenancy_teamquota_change", args=[quota.pk])
    data = _form(staff, url)
    data.update({"tokens_per_minute": 5000, "monthly_budget": "250.00"})
    # A new inline row as the admin's form posts it: its borrowing limit (Kueue clusters only) at its initial 0.
    data.update(
        {
            "gpu_limits-TOTAL_FORMS": 1,
            "gpu_limits-0-accelerator_type": "nvidia-l4",
            "gpu_limits-0-gpus": 4,
            "gpu_limits-0-borrowing_limit": 0,
        }
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(url, data)
    assert response.status_code == 302, _errors(response)
    quota.refresh_from_db()
    assert (quota.tokens_per_minute, quota.monthly_budget) == (5000, Decimal("250.00"))
    assert {limit.accelerator_type: limit.gpus for limit in quota.gpu_limits.all()} == {"nvidia-l4": 4}
    [entry] = _audits("team_quota.update")
    assert entry.actor_label == "root-admin"
    assert entry.team_slug == "alpha"
    assert entry.after["tokens_per_minute"] == 5000
    assert entry.after["gpus"] == {"nvidia-l4": 4}


@pytest.mark.django_db
def test_a_quota_the_gateway_cannot_hold_is_refused_in_the_admin_too(staff: Client) -> None:
    team = TeamFactory(slug="alpha")
    quota = TeamQuota.objects.get(team=team)
    before = quota.tokens_per_minute
    url = reverse("admin:tenancy_teamquota_change", args=[quota.pk])
    data = _form(staff, url)
    data["tokens_per_minute"] = TOKEN_LIMIT_MAX + 1
    response = staff.post(url, data, follow=True)
    assert "tokens_per_minute" in response.content.decode()
    quota.refresh_from_db()
    assert quota.tokens_per_minute == before
    assert _audits("team_quota.update") == []


@pytest.mark.django_db
def test_a_team_is_created_edited_and_suspended_through_the_services(staff: Client) -> None:
    data = _form(staff, reverse("admin:tenancy_team_add"))
    data.update({"slug": "gamma", "display_name": "Gamma", "cost_center": "cc-1"})
    response = staff.post(reverse("admin:tenancy_team_add"), data)
    assert response.status_code == 302, _errors(response)
    team = Team.objects.get(slug="gamma")
    assert TeamQuota.objects.filter(team=team).exists()  # the service gives every team its quota
    assert [entry.target_label for entry in _audits("team.create")] == ["gamma"]
    url = reverse("admin:tenancy_team_change", args=[team.pk])
    data = _form(staff, url)
    data.update({"display_name": "Gamma Team", "status": "suspended"})
    response = staff.post(url, data)
    assert response.status_code == 302, _errors(response)
    team.refresh_from_db()
    assert (team.display_name, team.status) == ("Gamma Team", "suspended")
    assert _audits("team.update")[0].after["display_name"] == "Gamma Team"
    assert len(_audits("team.suspend")) == 1
    # A refused change (a malformed Backstage group) saves nothing and says why.
    data = _form(staff, url)
    data["backstage_group_ref"] = "not a group"
    page = staff.post(url, data, follow=True).content.decode()
    assert "Not saved" in page or "backstage_group_ref" in page
    team.refresh_from_db()
    assert team.backstage_group_ref is None
    assert len(_audits("team.update")) == 1


@pytest.mark.django_db
def test_a_version_edit_in_the_admin_does_what_the_same_edit_through_the_api_does(
    matrix: RoleMatrix,
    staff: Client,
    django_capture_on_commit_callbacks: Any,
    broker: Callable[[], list[tuple[str, str]]],
) -> None:
    """The same change to two deployed versions, one through the API and one through the admin: the same audit
    entry, the same nudges to the reconcilers and the same generation bump of the deployments that run them."""
    effects = []
    for route in ("api", "admin"):
        version = SelfHostedVersionFactory(model__slug=f"model-{route}", version="v1", cpu="4")
        pool = AcceleratorPoolFactory(cluster__name=f"cluster-{route}")
        deployment = Deployment.objects.create(
            team=matrix.team,
            name=f"chat-{route}",
            model_version=version,
            cluster=pool.cluster,
            accelerator_type=pool.accelerator_type,
            served_model_name=f"alpha-chat-{route}",
            gpus_per_replica=1,
        )
        queued_before = broker()
        with django_capture_on_commit_callbacks(execute=True):
            if route == "api":
                response = matrix.client("platform_admin").patch(
                    f"/api/v1/catalog/models/{version.model.slug}/versions/v1", {"cpu": "8"}, format="json"
                )
                assert response.status_code == 200, response.json()
            else:
                url = reverse("admin:catalog_modelversion_change", args=[version.pk])
                data = _form(staff, url)
                data["cpu"] = "8"
                response = staff.post(url, data)
                assert response.status_code == 302, _errors(response)
        version.refresh_from_db()
        deployment.refresh_from_db()
        [entry] = AuditEvent.objects.filter(target_type="model_version", target_id=str(version.pk))
        tasks = [task for task, args in broker() if (task, args) not in queued_before]
        effects.append(
            {
                "cpu": version.cpu,
                "audit": (entry.action, entry.before.get("cpu"), entry.after.get("cpu")),
                "generation": deployment.generation,
                "events": DeploymentEvent.objects.filter(deployment=deployment).count(),
                "tasks": sorted(tasks),
            }
        )
    assert effects[0] == effects[1]
    assert effects[1]["cpu"] == "8"
    assert effects[1]["audit"] == ("model_version.update", "4", "8")


@pytest.mark.django_db
def test_a_pool_edit_in_the_admin_is_audited(staff: Client) -> None:
    pool = AcceleratorPoolFactory(cluster__name="sandbox")
    url = reverse("admin:clusters_acceleratorpool_change", args=[pool.pk])
    data = _form(staff, url)
    data["hourly_price_per_gpu"] = "1.2500"
    response = staff.post(url, data)
    assert response.status_code == 302, _errors(response)
    pool.refresh_from_db()
    assert pool.hourly_price_per_gpu == Decimal("1.2500")
    [entry] = AuditEvent.objects.filter(target_type="accelerator_pool")
    assert entry.actor_label == "root-admin"


# --- read-only there ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_models_whose_rules_live_in_the_api_are_read_only_in_the_admin(matrix: RoleMatrix, staff: Client) -> None:
    """Memberships (the last-admin rule), deployment events and deployments (the reconciler's), prices (effective-dated
    history), tokens (shown once at issue), audit entries: no add, no change, no delete; a forged post changes
    nothing."""
    version = SelfHostedVersionFactory()
    pool = AcceleratorPoolFactory()
    deployment = Deployment.objects.create(
        team=matrix.team,
        name="chat",
        model_version=version,
        cluster=pool.cluster,
        accelerator_type=pool.accelerator_type,
        served_model_name="alpha-chat",
        gpus_per_replica=1,
    )
    event = DeploymentEvent.objects.create(deployment=deployment, phase="Pending", reason="Created", generation=1)
    price = PriceFactory(model=ManagedVersionFactory().model)
    membership = Membership.objects.filter(team=matrix.team).first()
    assert membership is not None
    read_only = {
        "tenancy_membership": membership,
        "deployments_deploymentevent": event,
        "deployments_deployment": deployment,
        "catalog_modelprice": price,
        "tokens_apitoken": None,
        "core_auditevent": None,
        "tenancy_teamgpuquota": None,
    }
    for name, instance in read_only.items():
        app_label, model_name = name.split("_", 1)
        model = next(
            (model for model in admin.site._registry if model._meta.label_lower == f"{app_label}.{model_name}"), None
        )
        if model is None:
            continue  # not registered at all: nothing to write through
        model_admin = admin.site._registry[model]
        request = staff.get("/").wsgi_request
        request.user = UserFactory(is_staff=True, is_superuser=True)
        assert not model_admin.has_add_permission(request), name
        assert not model_admin.has_change_permission(request, instance), name
        assert not model_admin.has_delete_permission(request, instance), name
        assert staff.get(reverse(f"admin:{name}_add")).status_code == 403, name
    before = (membership.role, event.reason, price.price_per_million)
    staff.post(reverse("admin:tenancy_membership_change", args=[membership.pk]), {"role": "viewer"})
    staff.post(reverse("admin:deployments_deploymentevent_change", args=[event.pk]), {"reason": "Forged"})
    staff.post(reverse("admin:catalog_modelprice_delete", args=[price.pk]), {"post": "yes"})
    membership.refresh_from_db()
    event.refresh_from_db()
    price.refresh_from_db()
    assert (membership.role, event.reason, price.price_per_million) == before
    assert staff.post(reverse("admin:deployments_deploymentevent_add"), {"reason": "x"}).status_code == 403


@pytest.mark.django_db
def test_nothing_is_deleted_around_a_service(staff: Client) -> None:
    for model, model_admin in admin.site._registry.items():
        request = staff.get("/").wsgi_request
        request.user = UserFactory(is_staff=True, is_superuser=True)
        if model._meta.label_lower in ("tenancy.user", "auth.group"):
            continue  # people are managed as Django users
        assert not model_admin.has_delete_permission(request), model._meta.label


# --- money -------------------------------------------------------------------------------------------------------


def test_money_shows_its_currency_and_sensible_precision() -> None:
    assert money(Decimal("1234.5"), "EUR") == "1,234.50 EUR"
    assert money(Decimal("250"), "USD") == "250.00 USD"
    assert money(Decimal("0.001234567890"), "USD") == "0.0012 USD"
    assert money(Decimal("0.25"), "USD") == "0.25 USD"
    assert money(Decimal("0"), "USD") == "0.00 USD"
    assert money(None, "USD") == "-"
    assert percent(Decimal("37.5"), Decimal("150")) == "25.0 %"
    assert percent(Decimal("5"), Decimal("0")) == "-"


@pytest.mark.django_db
def test_budgets_show_money_with_currency_and_a_percent_column(staff: Client) -> None:
    team = TeamFactory(slug="alpha")
    BudgetState.objects.create(
        team=team, month=datetime.now(UTC).date().replace(day=1), budget=Decimal("200.00"), spend=Decimal("50.6")
    )
    page = staff.get(reverse("admin:usage_budgetstate_changelist")).content.decode()
    assert f"200.00 {settings.PORTAL_CURRENCY}" in page
    assert f"50.60 {settings.PORTAL_CURRENCY}" in page
    assert "25.3 %" in page
    assert "% of budget" in page
    quotas = staff.get(reverse("admin:tenancy_teamquota_changelist")).content.decode()
    assert settings.PORTAL_CURRENCY in quotas


@pytest.mark.django_db
def test_membership_inline_and_list_offer_no_edit(staff: Client) -> None:
    membership = MembershipFactory()
    page = staff.get(reverse("admin:tenancy_team_change", args=[membership.team.pk])).content.decode()
    assert 'name="memberships-0-role"' not in page  # shown, not editable
