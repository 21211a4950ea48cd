"""Gateway API: authorization matrices on every endpoint, issue/rotate/revoke, the one-time reveal link,
validation problems that change nothing, and that a key is never returned after creation."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.core.models import AuditEvent
from portal.gateway.models import Credential, CredentialReveal, ProviderBackend
from portal.gateway.services import credential_issue
from tests.conftest import ROLES, RoleMatrix, assert_problem, client_with_token
from tests.factories import CatalogModelFactory, ClusterFactory

pytestmark = pytest.mark.django_db

BASE = "/api/v1/teams/alpha/credentials"


def _issue(matrix: RoleMatrix, name: str = "existing") -> Credential:
    return credential_issue(actor=matrix.admin, team=matrix.team, name=name).credential


@pytest.mark.parametrize("who", ROLES)
def test_list_matrix(matrix: RoleMatrix, who: str) -> None:
    _issue(matrix)
    response = matrix.client(who).get(BASE)
    expected = {"anonymous": 401, "outsider": 404, "viewer": 200, "developer": 200, "admin": 200}
    assert response.status_code == expected.get(who, 200)
    if response.status_code == 200:
        body = response.json()
        assert [item["name"] for item in body["results"]] == ["existing"]
        item = body["results"][0]
        assert "key" not in item
        assert not set(item) & {"key_hash", "key_ciphertext"}
        assert item["state"] == "active"
        assert item["client_id"].startswith("alpha.")


@pytest.mark.parametrize("who", ROLES)
def test_create_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).post(BASE, {"name": "ci"}, format="json")
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403, "developer": 201, "admin": 201}
    assert response.status_code == expected.get(who, 201), response.content
    created = Credential.objects.filter(name="ci").count()
    assert created == (1 if response.status_code == 201 else 0)


@pytest.mark.parametrize("who", ROLES)
def test_detail_matrix(matrix: RoleMatrix, who: str) -> None:
    credential = _issue(matrix)
    response = matrix.client(who).get(f"{BASE}/{credential.pk}")
    expected = {"anonymous": 401, "outsider": 404}
    assert response.status_code == expected.get(who, 200)
    if response.status_code == 200:
        assert response.json()["id"] == credential.pk
        assert "key" not in response.json()


@pytest.mark.parametrize("who", ROLES)
def test_rotate_matrix(matrix: RoleMatrix, who: str) -> None:
    credential = _issue(matrix)
    response = matrix.client(who).post(f"{BASE}/{credential.pk}/rotate", {}, format="json")
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403}
    assert response.status_code == expected.get(who, 201), response.content
    credential.refresh_from_db()
    assert (credential.replaced_by_id is not None) == (response.status_code == 201)


@pytest.mark.parametrize("who", ROLES)
def test_revoke_matrix(matrix: RoleMatrix, who: str) -> None:
    credential = _issue(matrix)
    response = matrix.client(who).delete(f"{BASE}/{credential.pk}")
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403}
    assert response.status_code == expected.get(who, 204)
    credential.refresh_from_db()
    assert (credential.revoked_at is not None) == (response.status_code == 204)


def test_key_is_shown_once_and_never_again(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    created = client.post(BASE, {"name": "svc", "expires_at": None}, format="json", HTTP_IDEMPOTENCY_KEY="abc-1")
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("gpk_")
    assert created["Location"] == f"{BASE}/{created.json()['id']}"
    later = [
        client.get(BASE),
        client.get(f"{BASE}/{created.json()['id']}"),
        matrix.client("platform_admin").get("/api/v1/audit-events"),
        client.post(BASE, {"name": "svc", "expires_at": None}, format="json", HTTP_IDEMPOTENCY_KEY="abc-1"),
    ]
    for response in later:
        assert key not in response.content.decode()
    assert later[-1]["Idempotent-Replayed"] == "true"
    events = AuditEvent.objects.filter(team_slug="alpha")
    assert key not in json.dumps([[event.before, event.after] for event in events])
    assert Credential.objects.filter(name="svc").count() == 1


def test_rotate_returns_a_new_key_and_the_old_one_is_rotating(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    created = client.post(BASE, {"name": "svc"}, format="json").json()
    rotated = client.post(f"{BASE}/{created['id']}/rotate", {"overlap_seconds": 600}, format="json")
    assert rotated.status_code == 201
    body = rotated.json()
    assert body["key"] != created["key"]
    assert body["client_id"] != created["client_id"]
    assert body["name"] == "svc"
    old = client.get(f"{BASE}/{created['id']}").json()
    assert old["state"] == "rotating"
    assert old["replaced_by"] == body["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "!bad"}, "name"),
        ({"name": "x", "allowed_models": ["no-such-model"]}, "allowed_models"),
        ({"name": "x", "allowed_models": "gpt"}, "allowed_models"),
        ({"name": "x", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "delivery": "email"}, "delivery"),
        ({"name": "x", "key": "mine"}, "key"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(matrix: RoleMatrix, body: dict, field: str) -> None:
    response = matrix.client("developer").post(BASE, body, format="json")
    problem = assert_problem(response, 400)
    assert field in [entry["field"] for entry in problem["errors"]], problem
    assert not Credential.objects.exists()


def test_rotate_bad_input_and_inactive_credentials(matrix: RoleMatrix) -> None:
    credential = _issue(matrix)
    client = matrix.client("developer")
    problem = assert_problem(client.post(f"{BASE}/{credential.pk}/rotate", {"overlap_seconds": -1}, format="json"), 400)
    assert problem["errors"][0]["field"] == "overlap_seconds"
    assert_problem(client.post(f"{BASE}/{credential.pk}/rotate", {"overlap_seconds": 10**9}, format="json"), 400)
    client.delete(f"{BASE}/{credential.pk}")
    assert_problem(client.post(f"{BASE}/{credential.pk}/rotate", {}, format="json"), 409, "credential_not_active")
    assert Credential.objects.count() == 1
    assert_problem(client.get(f"{BASE}/999999"), 404, "credential_not_found")
    assert_problem(matrix.client("admin").get("/api/v1/teams/beta/credentials"), 404)


def test_allowed_models_are_checked_against_the_catalog(matrix: RoleMatrix) -> None:
    CatalogModelFactory(slug="gpt-x")
    response = matrix.client("developer").post(BASE, {"name": "x", "allowed_models": ["gpt-x"]}, format="json")
    assert response.status_code == 201
    assert response.json()["allowed_models"] == ["gpt-x"]


def test_reveal_link_delivers_the_key_once_to_its_creator(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    created = client.post(BASE, {"name": "via-backstage", "delivery": "reveal_link"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert "key" not in body
    assert body["reveal_url"].startswith("http://testserver/api/v1/credential-reveals/")
    token = body["reveal_url"].rsplit("/", 1)[1]
    assert not CredentialReveal.objects.filter(token_hash=token).exists()  # stored hashed
    path = f"/api/v1/credential-reveals/{token}"
    assert matrix.client("anonymous").get(path).status_code == 401
    assert_problem(matrix.client("admin").get(path), 404)  # another user, even a team admin
    assert_problem(matrix.client("platform_admin").get(path), 404)
    revealed = client.get(path)
    assert revealed.status_code == 200
    key = revealed.json()["key"]
    credential = Credential.objects.get(name="via-backstage")
    assert credential.key_hash == __import__("hashlib").sha256(key.encode()).hexdigest()
    assert revealed["Cache-Control"] == "no-store"
    assert_problem(client.get(path), 410, "reveal_gone")
    assert AuditEvent.objects.filter(action="credential.reveal").count() == 1


def test_reveal_link_expires(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = client.post(BASE, {"name": "late", "delivery": "reveal_link"}, format="json").json()
    CredentialReveal.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_problem(client.get(f"/api/v1/credential-reveals/{body['reveal_url'].rsplit('/', 1)[1]}"), 410)
    assert_problem(client.get("/api/v1/credential-reveals/unknown-token"), 404)


def test_reveal_link_on_behalf_of_through_backstage(matrix: RoleMatrix) -> None:
    from tests.factories import ServicePrincipalFactory

    backstage = client_with_token(ServicePrincipalFactory(), scopes=["backstage"])
    headers = {"HTTP_X_BACKSTAGE_USER": "user:default/developer"}
    created = backstage.post(BASE, {"name": "bs", "delivery": "reveal_link"}, format="json", **headers)
    assert created.status_code == 201, created.content
    token = created.json()["reveal_url"].rsplit("/", 1)[1]
    assert_problem(
        backstage.get(f"/api/v1/credential-reveals/{token}", HTTP_X_BACKSTAGE_USER="user:default/admin"), 404
    )
    revealed = backstage.get(f"/api/v1/credential-reveals/{token}", **headers)
    assert revealed.status_code == 200
    assert revealed.json()["key"].startswith("gpk_")


def test_reveal_of_a_revoked_key_is_not_found(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = client.post(BASE, {"name": "gone", "delivery": "reveal_link"}, format="json").json()
    client.delete(f"{BASE}/{body['id']}")
    assert not CredentialReveal.objects.exists()  # revoking deletes the unused links
    response = client.get(f"/api/v1/credential-reveals/{body['reveal_url'].rsplit('/', 1)[1]}")
    assert_problem(response, 404, "reveal_not_found")
    assert "gpk_" not in response.content.decode()


def test_a_used_reveal_link_is_gone_and_shows_nothing(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = client.post(BASE, {"name": "once", "delivery": "reveal_link"}, format="json").json()
    path = f"/api/v1/credential-reveals/{body['reveal_url'].rsplit('/', 1)[1]}"
    key = client.get(path).json()["key"]
    again = client.get(path)
    assert_problem(again, 410, "reveal_gone")
    assert key not in again.content.decode()
    assert AuditEvent.objects.filter(action="credential.reveal").count() == 1


@pytest.mark.parametrize("change", ["demoted_to_viewer", "left_the_team"])
def test_a_reveal_link_stops_working_when_its_creator_may_no_longer_manage_keys(
    matrix: RoleMatrix, change: str
) -> None:
    from portal.tenancy.models import Membership

    client = matrix.client("developer")
    body = client.post(BASE, {"name": "link", "delivery": "reveal_link"}, format="json").json()
    path = f"/api/v1/credential-reveals/{body['reveal_url'].rsplit('/', 1)[1]}"
    membership = Membership.objects.filter(team=matrix.team, user=matrix.developer)
    if change == "demoted_to_viewer":
        membership.update(role="viewer")
    else:
        membership.delete()
    response = client.get(path)
    assert_problem(response, 404, "reveal_not_found")
    assert "gpk_" not in response.content.decode()
    assert CredentialReveal.objects.get().revealed_at is None  # not used up
    assert not AuditEvent.objects.filter(action="credential.reveal").exists()


def test_responses_carrying_a_key_are_not_stored_by_caches(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    created = client.post(BASE, {"name": "svc"}, format="json")
    assert created.status_code == 201
    assert created["Cache-Control"] == "no-store"
    rotated = client.post(f"{BASE}/{created.json()['id']}/rotate", {"overlap_seconds": 60}, format="json")
    assert rotated.status_code == 201
    assert rotated["Cache-Control"] == "no-store"
    linked = client.post(BASE, {"name": "link", "delivery": "reveal_link"}, format="json")
    assert linked["Cache-Control"] == "no-store"


def test_rotate_with_an_overlap_past_the_maximum_is_a_400_naming_the_field(matrix: RoleMatrix) -> None:
    credential = _issue(matrix)
    client = matrix.client("developer")
    for seconds in (10**18, 30 * 86400 + 1):  # the first overflowed timedelta: a 500 before
        problem = assert_problem(
            client.post(f"{BASE}/{credential.pk}/rotate", {"overlap_seconds": seconds}, format="json"), 400
        )
        assert [entry["field"] for entry in problem["errors"]] == ["overlap_seconds"]
        assert (problem["errors"][0]["code"], "2592000" in problem["errors"][0]["message"]) == ("max_value", True)
    assert Credential.objects.count() == 1
    assert Credential.objects.get().rotated_at is None
    ok = client.post(f"{BASE}/{credential.pk}/rotate", {"overlap_seconds": 30 * 86400}, format="json")
    assert ok.status_code == 201


# ---------------------------------------------------------------------------------------------- platform admin


ADMIN_ONLY = {"anonymous": 401, "outsider": 403, "viewer": 403, "developer": 403, "admin": 403, "platform_admin": 200}


@pytest.mark.parametrize("who", ROLES)
def test_provider_backend_matrix(matrix: RoleMatrix, who: str) -> None:
    cluster = ClusterFactory(name="gpu-eu")
    body = {"name": "openai", "provider": "openai", "hostname": "api.openai.com", "credential": "sk-upstream-secret"}
    created = matrix.client(who).post(f"/api/v1/clusters/{cluster.name}/provider-backends", body, format="json")
    assert created.status_code == (201 if who == "platform_admin" else ADMIN_ONLY[who])
    listed = matrix.client(who).get(f"/api/v1/clusters/{cluster.name}/provider-backends")
    assert listed.status_code == ADMIN_ONLY[who]
    detail = matrix.client(who).get(f"/api/v1/clusters/{cluster.name}/provider-backends/openai")
    assert detail.status_code == (200 if who == "platform_admin" else ADMIN_ONLY[who])
    patched = matrix.client(who).patch(
        f"/api/v1/clusters/{cluster.name}/provider-backends/openai", {"port": 8443}, format="json"
    )
    assert patched.status_code == ADMIN_ONLY[who]
    for response in (created, listed, detail, patched):
        assert "sk-upstream-secret" not in response.content.decode()
    assert ProviderBackend.objects.count() == (1 if who == "platform_admin" else 0)
    deleted = matrix.client(who).delete(f"/api/v1/clusters/{cluster.name}/provider-backends/openai")
    assert deleted.status_code == (204 if who == "platform_admin" else ADMIN_ONLY[who])
    assert ProviderBackend.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "b", "provider": "aws-bedrock", "hostname": "bedrock-runtime.us-east-1.amazonaws.com"}, "region"),
        ({"name": "a", "provider": "azure-openai", "hostname": "x.openai.azure.com", "credential": "k"}, "api_version"),
        ({"name": "o", "provider": "openai", "hostname": "api.openai.com"}, "credential"),
        ({"name": "o", "provider": "cohere", "hostname": "api.cohere.com", "credential": "k"}, "provider"),
        ({"name": "o", "provider": "openai", "hostname": "https://api.openai.com", "credential": "k"}, "hostname"),
        ({"name": "Bad Name", "provider": "openai", "hostname": "api.openai.com", "credential": "k"}, "name"),
        ({"name": "o", "provider": "openai", "hostname": "api.openai.com", "credential": "k", "port": 0}, "port"),
    ],
)
def test_provider_backend_bad_input(matrix: RoleMatrix, body: dict, field: str) -> None:
    cluster = ClusterFactory(name="gpu-eu")
    response = matrix.client("platform_admin").post(
        f"/api/v1/clusters/{cluster.name}/provider-backends", body, format="json"
    )
    problem = assert_problem(response, 400)
    assert field in [entry["field"] for entry in problem["errors"]], problem
    assert not ProviderBackend.objects.exists()


@pytest.mark.parametrize("who", ROLES)
def test_gateway_bootstrap_matrix(matrix: RoleMatrix, who: str) -> None:
    ClusterFactory(name="gpu-eu")
    response = matrix.client(who).get("/api/v1/clusters/gpu-eu/gateway-bootstrap")
    assert response.status_code == ADMIN_ONLY[who]
    if response.status_code == 200:
        body = response.json()
        assert [item["kind"] for item in body["manifests"]] == ["GatewayConfig", "EnvoyProxy"]
        assert body["gateway_patch"]["metadata"]["annotations"] == {
            "aigateway.envoyproxy.io/gateway-config": "ai-gateway-portal-config"
        }
    assert_problem(matrix.client("platform_admin").get("/api/v1/clusters/nope/gateway-bootstrap"), 404)


@pytest.mark.parametrize("who", ROLES)
def test_gateway_policy_matrix(matrix: RoleMatrix, who: str) -> None:
    ClusterFactory(name="gpu-eu")
    response = matrix.client(who).get("/api/v1/clusters/gpu-eu/gateway-policy")
    assert response.status_code == ADMIN_ONLY[who]
    if response.status_code == 200:
        assert response.json()["generation"] == 0


@pytest.mark.parametrize("who", ROLES)
def test_team_gateway_policy_matrix_and_effective_limits(matrix: RoleMatrix, who: str) -> None:
    from portal.gateway.services import team_budget_enforcement_set

    response = matrix.client(who).get("/api/v1/teams/alpha/gateway-policy")
    expected = {"anonymous": 401, "outsider": 404}
    assert response.status_code == expected.get(who, 200)
    if response.status_code != 200:
        return
    assert response.json() == {
        "team": "alpha",
        "budget_enforcement": "none",
        "reason": "",
        "blocked_reason": "",
        "tokens_per_minute": 100000,
        "tokens_per_day": 10000000,
        "current_keys": 0,
    }
    team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="throttle", reason="90% spent")
    throttled = matrix.client(who).get("/api/v1/teams/alpha/gateway-policy").json()
    assert (throttled["tokens_per_minute"], throttled["tokens_per_day"]) == (10000, 1000000)
    team_budget_enforcement_set(actor=None, team=matrix.team, enforcement="block", reason="spent")
    blocked = matrix.client(who).get("/api/v1/teams/alpha/gateway-policy").json()
    assert (blocked["blocked_reason"], blocked["tokens_per_minute"], blocked["reason"]) == ("budget", 0, "spent")


def test_rotation_can_deliver_the_new_key_by_reveal_link(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    created = client.post(BASE, {"name": "svc"}, format="json").json()
    rotated = client.post(
        f"{BASE}/{created['id']}/rotate", {"delivery": "reveal_link", "overlap_seconds": 0}, format="json"
    )
    assert rotated.status_code == 201
    body = rotated.json()
    assert "key" not in body
    assert rotated["Location"] == f"{BASE}/{body['id']}"
    revealed = client.get(f"/api/v1/credential-reveals/{body['reveal_url'].rsplit('/', 1)[1]}").json()
    assert revealed["client_id"] == body["client_id"]
    assert revealed["key"] != created["key"]
    assert client.get(f"{BASE}/{created['id']}").json()["state"] in ("rotating", "expired")


@pytest.mark.parametrize("who", ROLES)
def test_reveal_matrix(matrix: RoleMatrix, who: str) -> None:
    """Only the person who asked for the link reads the key (here the developer); everyone else gets 404."""
    created = matrix.client("developer").post(BASE, {"name": "link", "delivery": "reveal_link"}, format="json").json()
    path = f"/api/v1/credential-reveals/{created['reveal_url'].rsplit('/', 1)[1]}"
    response = matrix.client(who).get(path)
    expected = {"anonymous": 401, "developer": 200}
    assert response.status_code == expected.get(who, 404)
    still_unrevealed = CredentialReveal.objects.filter(revealed_at__isnull=True).exists()
    assert still_unrevealed == (who != "developer")
