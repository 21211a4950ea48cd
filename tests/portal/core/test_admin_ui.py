"""The admin UI: every registered model's list, search and detail pages render for a platform admin,
and no page shows a secret."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from portal.tokens.services import api_token_issue
from tests.factories import (
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    SelfHostedVersionFactory,
    UserFactory,
)


@pytest.fixture
def staff_client(db: None) -> Client:
    user = UserFactory(username="root-admin", backstage_ref=None, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_every_admin_page_renders_and_hides_token_secrets(staff_client: Client) -> None:
    membership = MembershipFactory()
    SelfHostedVersionFactory()
    PriceFactory(model=ManagedVersionFactory().model)
    issued = api_token_issue(actor=None, principal=membership.user, name="admin-visible", scopes=[])
    staff_client.get("/api/v1/me")  # nothing; just make sure sessions do not break the API
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        response = staff_client.get(changelist, {"q": "a"} if model_admin.search_fields else {})
        assert response.status_code == 200, changelist
        instance = model._default_manager.first()
        if instance is not None:
            change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[instance.pk])
            page = staff_client.get(change)
            assert page.status_code == 200, change
            assert issued.plaintext not in page.content.decode()
            assert issued.token.token_hash not in page.content.decode()
    token_page = staff_client.get(reverse("admin:tokens_apitoken_change", args=[issued.token.pk])).content.decode()
    assert issued.token.prefix in token_page
    assert issued.token.token_hash not in token_page


@pytest.mark.django_db
def test_admin_revoke_action_is_audited(staff_client: Client) -> None:
    issued = api_token_issue(actor=None, principal=UserFactory(), name="to-revoke", scopes=[])
    response = staff_client.post(
        reverse("admin:tokens_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [issued.token.pk]},
    )
    assert response.status_code == 302
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is not None
    from portal.core.models import AuditEvent

    assert AuditEvent.objects.filter(action="api_token.revoke", actor__username="root-admin").count() == 1


@pytest.mark.django_db
def test_session_api_access_is_for_staff_only() -> None:
    person = UserFactory()
    client = Client()
    client.force_login(person)
    assert client.get("/api/v1/me").status_code == 401
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get("/api/v1/me").json()["platform_admin"] is True
