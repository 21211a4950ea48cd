"""The `catalog:read` scope: what Backstage's catalog mirror needs (every team, its deployments, the whole model
catalog), and nothing more (no writes, no members, credentials, costs or audit; nothing on behalf of a user)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.core.models import AuditEvent
from portal.tenancy.models import Team, TeamGpuQuota
from tests.conftest import RoleMatrix, client_with_token
from tests.factories import (
    AcceleratorPoolFactory,
    CatalogModelFactory,
    SelfHostedVersionFactory,
    ServicePrincipalFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirror(matrix: RoleMatrix) -> APIClient:
    AcceleratorPoolFactory(cluster__name="gpu-eu", cluster__region="eu-west", gpu_count=8)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    created = matrix.client("developer").post(
        "/api/v1/teams/alpha/deployments",
        {"name": "chat", "model": "llama", "accelerator_type": "nvidia-l4"},
        format="json",
    )
    assert created.status_code == 201, created.content
    restricted = CatalogModelFactory(slug="beta-only", visibility="teams")
    restricted.visible_to_teams.add(matrix.other_team)
    return client_with_token(ServicePrincipalFactory(username="backstage-catalog"), scopes=["catalog:read"])


def test_the_mirror_reads_every_team_its_deployments_and_the_whole_catalog(
    matrix: RoleMatrix, mirror: APIClient
) -> None:
    teams = mirror.get("/api/v1/teams?page_size=200")
    assert teams.status_code == 200
    assert {team["slug"] for team in teams.json()["results"]} == set(Team.objects.values_list("slug", flat=True))
    assert mirror.get("/api/v1/teams/alpha").status_code == 200
    deployments = mirror.get("/api/v1/teams/alpha/deployments")
    assert deployments.status_code == 200
    assert [item["name"] for item in deployments.json()["results"]] == ["chat"]
    assert mirror.get("/api/v1/teams/alpha/deployments/chat").status_code == 200
    models = {item["slug"] for item in mirror.get("/api/v1/catalog/models?page_size=200").json()["results"]}
    assert {"llama", "beta-only"} <= models
    assert mirror.get("/api/v1/catalog/models/beta-only").status_code == 200


def test_the_mirror_writes_nothing_and_reads_nothing_else(matrix: RoleMatrix, mirror: APIClient) -> None:
    audit_before = AuditEvent.objects.count()
    refused = {
        "team create": mirror.post("/api/v1/teams", {"slug": "mirror-team", "display_name": "x"}, format="json"),
        "team update": mirror.patch("/api/v1/teams/alpha", {"display_name": "renamed"}, format="json"),
        "deploy": mirror.post(
            "/api/v1/teams/alpha/deployments",
            {"name": "other", "model": "llama", "accelerator_type": "nvidia-l4"},
            format="json",
        ),
        "delete": mirror.delete("/api/v1/teams/alpha/deployments/chat"),
        "members": mirror.get("/api/v1/teams/alpha/members"),
        "quota": mirror.get("/api/v1/teams/alpha/quota"),
        "credentials": mirror.get("/api/v1/teams/alpha/credentials"),
        "team costs": mirror.get("/api/v1/teams/alpha/costs"),
        "all costs": mirror.get("/api/v1/costs"),
        "audit": mirror.get("/api/v1/audit-events"),
        "model write": mirror.patch("/api/v1/catalog/models/llama", {"display_name": "x"}, format="json"),
    }
    for name, response in refused.items():
        assert response.status_code in (403, 404), (name, response.status_code, response.content[:300])
    assert AuditEvent.objects.count() == audit_before
    assert Team.objects.get(slug="alpha").display_name != "renamed"
    assert not Team.objects.filter(slug="mirror-team").exists()


def test_the_scope_does_not_follow_a_user_acted_for(matrix: RoleMatrix) -> None:
    """On behalf of a person, a catalog:read principal sees what that person sees, no more."""
    principal = ServicePrincipalFactory(username="backstage-both")
    client = client_with_token(principal, scopes=["catalog:read", "backstage"])
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {client.token_plaintext}",  # type: ignore[attr-defined]
        HTTP_X_BACKSTAGE_USER="user:default/outsider",
    )
    assert client.get("/api/v1/teams/alpha").status_code == 404
    assert {team["slug"] for team in client.get("/api/v1/teams").json()["results"]} == {"beta"}
