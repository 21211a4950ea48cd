"""The gateway's admin pages render read-only and never show a key, its hash or a provider credential."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from portal.gateway import services
from portal.gateway.models import ClusterGatewayPolicy, TeamGatewayPolicy
from tests.conftest import RoleMatrix
from tests.factories import ClusterFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_admin_pages_show_no_secrets_and_allow_no_edits(matrix: RoleMatrix) -> None:
    client = Client()
    client.force_login(UserFactory(username="root", backstage_ref=None, is_staff=True, is_superuser=True))
    issued = services.credential_issue(actor=None, team=matrix.team, name="ci")
    cluster = ClusterFactory()
    backend = services.provider_backend_create(
        actor=None,
        cluster=cluster,
        values={"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-upstream"},
    )
    services.team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="throttle", reason="x")
    rows = [
        ("credential", issued.credential.pk),
        ("providerbackend", backend.pk),
        ("teamgatewaypolicy", TeamGatewayPolicy.objects.get().pk),
        ("clustergatewaypolicy", ClusterGatewayPolicy.objects.get().pk),
    ]
    for model_name, pk in rows:
        listing = client.get(reverse(f"admin:gateway_{model_name}_changelist"))
        assert listing.status_code == 200
        page = client.get(reverse(f"admin:gateway_{model_name}_change", args=[pk]))
        assert page.status_code == 200
        text = page.content.decode() + listing.content.decode()
        for secret in (issued.key, issued.credential.key_hash, issued.credential.key_ciphertext, "sk-upstream"):
            assert secret not in text
        assert client.post(reverse(f"admin:gateway_{model_name}_change", args=[pk]), {}).status_code == 403
    assert client.get(reverse("admin:gateway_credential_add")).status_code == 403
