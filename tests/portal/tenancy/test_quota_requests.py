"""Self-service quota: new teams' default quota, and quota requests a platform admin approves through the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from portal.core.models import AuditEvent
from portal.deployments.models import Deployment
from portal.tenancy.models import QuotaRequest, Team, TeamGpuQuota
from tests.conftest import ROLES, RoleMatrix, assert_problem, client_with_token
from tests.factories import AcceleratorPoolFactory, SelfHostedVersionFactory, UserFactory
from tests.portal.tenancy.test_api import tenancy_state

pytestmark = pytest.mark.django_db

REQUESTS = "/api/v1/teams/alpha/quota-requests"
ASK = {"gpus": {"nvidia-l4": 4}, "max_deployments": 8, "reason": "a second chat model for the support bot"}


def _state() -> dict[str, Any]:
    return {**tenancy_state(), "requests": sorted(QuotaRequest.objects.values_list("id", "status", "gpus"))}


def _ask(client: APIClient, body: dict[str, Any] | None = None) -> Any:
    return client.post(REQUESTS, ASK if body is None else body, format="json")


@pytest.mark.parametrize("who", ROLES)
def test_create_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = _state()
    response = _ask(client)
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403}.get(who, 201)
    assert response.status_code == expected, response.content
    if expected != 201:
        assert _state() == before
        return
    body = response.json()
    assert body["status"] == "pending"
    assert (body["team"], body["gpus"], body["max_deployments"]) == ("alpha", {"nvidia-l4": 4}, 8)
    assert body["requested_by"] == str(getattr(matrix, who))
    assert (body["decided_by"], body["decided_at"], body["decision_note"]) == (None, None, "")
    assert response["Location"] == f"{REQUESTS}/{body['id']}"
    event = AuditEvent.objects.get(action="quota_request.create")
    assert (event.team_slug, event.after["gpus"], event.after["status"]) == ("alpha", {"nvidia-l4": 4}, "pending")


@pytest.mark.parametrize("who", ROLES)
def test_read_matrix(matrix: RoleMatrix, who: str) -> None:
    created = _ask(matrix.client("developer")).json()
    client = matrix.client(who)
    expected = {"anonymous": 401, "outsider": 404}.get(who, 200)
    listing = client.get(REQUESTS)
    assert listing.status_code == expected
    assert client.get(f"{REQUESTS}/{created['id']}").status_code == expected
    if expected == 200:
        assert [entry["id"] for entry in listing.json()["results"]] == [created["id"]]


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("who", ROLES)
def test_decision_matrix(matrix: RoleMatrix, who: str, decision: str) -> None:
    created = _ask(matrix.client("developer")).json()
    client = matrix.client(who)
    before = _state()
    response = client.post(f"{REQUESTS}/{created['id']}/{decision}", {"note": "ok"}, format="json")
    expected = {"anonymous": 401, "outsider": 404, "platform_admin": 200}.get(who, 403)
    assert response.status_code == expected, response.content
    if expected != 200:
        assert _state() == before
    else:
        assert response.json()["status"] == {"approve": "approved", "reject": "rejected"}[decision]


@pytest.mark.parametrize("who", ROLES)
def test_platform_queue_matrix(matrix: RoleMatrix, who: str) -> None:
    created = _ask(matrix.client("developer")).json()
    response = matrix.client(who).get("/api/v1/quota-requests")
    expected = {"anonymous": 401, "platform_admin": 200}.get(who, 403)
    assert response.status_code == expected
    if expected == 200:
        assert [(entry["id"], entry["team"]) for entry in response.json()["results"]] == [(created["id"], "alpha")]


def test_approval_applies_the_requested_totals_and_keeps_other_accelerators(matrix: RoleMatrix) -> None:
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-h100", gpus=2)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=1)
    created = _ask(matrix.client("developer")).json()
    response = matrix.client("platform_admin").post(
        f"{REQUESTS}/{created['id']}/approve", {"note": "go ahead"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["decided_by"], body["decision_note"]) == ("approved", "platform-admin", "go ahead")
    quota = matrix.client("viewer").get("/api/v1/teams/alpha/quota").json()
    assert quota["gpus"] == {"nvidia-h100": 2, "nvidia-l4": 4}
    assert quota["max_deployments"] == 8
    actions = list(AuditEvent.objects.filter(team_slug="alpha").order_by("id").values_list("action", flat=True))
    assert actions[-3:] == ["quota_request.create", "quota_request.approve", "team_quota.update"]
    update = AuditEvent.objects.get(action="team_quota.update")
    assert (update.before["gpus"], update.after["gpus"]) == (
        {"nvidia-h100": 2, "nvidia-l4": 1},
        {"nvidia-h100": 2, "nvidia-l4": 4},
    )
    # Decided once: a second decision is a conflict and changes nothing.
    platform_admin = matrix.client("platform_admin")
    before = _state()
    again = platform_admin.post(f"{REQUESTS}/{created['id']}/reject", {"note": "no"}, format="json")
    assert_problem(again, 409, "quota_request_decided")
    assert _state() == before


def test_one_pending_request_per_team(matrix: RoleMatrix) -> None:
    first = _ask(matrix.client("developer")).json()
    admin = matrix.client("admin")
    before = _state()
    body = assert_problem(_ask(admin), 409, "quota_request_pending")
    assert body["pending_request"] == first["id"]
    assert _state() == before
    # Once decided, the team may ask again.
    matrix.client("platform_admin").post(f"{REQUESTS}/{first['id']}/reject", {"note": "not now"}, format="json")
    assert _ask(admin).status_code == 201


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"reason": "more"}, {"gpus": "nothing_requested"}),
        ({"gpus": {"nvidia-l4": 2}, "reason": "  "}, {"reason": "blank"}),
        ({"gpus": {"NVIDIA L4": 2}, "reason": "x"}, {"gpus.NVIDIA L4": "invalid"}),
        ({"gpus": {"nvidia-l4": -1}, "reason": "x"}, {"gpus.nvidia-l4": "min_value"}),
        ({"gpus": {"nvidia-l4": 2}, "reason": "x", "team": "beta"}, {"team": "unknown_field"}),
        ({"gpus": {"nvidia-l4": 2}}, {"reason": "required"}),
    ],
)
def test_invalid_requests_name_the_field_and_change_nothing(
    matrix: RoleMatrix, body: dict[str, Any], fields: dict[str, str]
) -> None:
    client = matrix.client("developer")
    before = _state()
    problem = assert_problem(_ask(client, body), 400, "validation_failed")
    found = {(entry["field"], entry["code"]) for entry in problem["errors"]}
    assert set(fields.items()) <= found, problem
    assert _state() == before


def test_reject_needs_a_note_and_withdraw_is_for_the_requester_or_an_admin(matrix: RoleMatrix) -> None:
    created = _ask(matrix.client("developer")).json()
    platform_admin = matrix.client("platform_admin")
    before = _state()
    problem = assert_problem(
        platform_admin.post(f"{REQUESTS}/{created['id']}/reject", {}, format="json"),
        400,
        "validation_failed",
    )
    assert problem["errors"] == [{"field": "note", "code": "blank", "message": "say why the request is rejected"}]
    assert _state() == before
    other_developer = UserFactory(backstage_ref="user:default/other-dev")
    matrix.team.memberships.create(user=other_developer, role="developer")
    other = client_with_token(other_developer)
    before = _state()
    assert_problem(other.post(f"{REQUESTS}/{created['id']}/withdraw"), 403, "insufficient_role")
    assert _state() == before
    withdrawn = matrix.client("admin").post(f"{REQUESTS}/{created['id']}/withdraw")
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"
    assert AuditEvent.objects.filter(action="quota_request.withdraw").count() == 1


def test_a_taken_slug_names_the_admins_to_ask(matrix: RoleMatrix) -> None:
    stranger = client_with_token(UserFactory(backstage_ref="user:default/stranger"))
    body = assert_problem(
        stranger.post("/api/v1/teams", {"slug": "alpha", "display_name": "Alpha"}, format="json"), 409, "team_exists"
    )
    assert body["admins"] == ["user:default/admin"]
    assert "ask one of its admins (user:default/admin) to add you" in body["detail"]


@override_settings(
    QUOTA_DEFAULTS={
        "max_deployments": 3,
        "tokens_per_minute": 1000,
        "tokens_per_day": 100_000,
        "monthly_budget": "50",
        "budget_policy": "block",
        "gpus": {"nvidia-l4": 2},
    }
)
def test_a_new_team_gets_the_configured_default_quota_and_deploys_without_an_admin() -> None:
    """The self-service path as a Backstage user walks it: onboard, deploy within the default quota, ask for more,
    a platform admin approves, deploy the bigger one."""
    AcceleratorPoolFactory(cluster__name="gpu-eu", gpu_count=16)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    person = client_with_token(UserFactory(backstage_ref="user:default/newcomer"))
    assert person.post("/api/v1/teams", {"slug": "newcomers", "display_name": "New"}, format="json").status_code == 201
    quota = person.get("/api/v1/teams/newcomers/quota").json()
    assert (quota["gpus"], quota["max_deployments"], quota["budget_policy"]) == ({"nvidia-l4": 2}, 3, "block")

    deploy = {"name": "chat", "model": "llama", "accelerator_type": "nvidia-l4", "min_replicas": 1, "max_replicas": 2}
    assert person.post("/api/v1/teams/newcomers/deployments", deploy, format="json").status_code == 201
    bigger = {**deploy, "name": "batch", "max_replicas": 4}
    assert_problem(person.post("/api/v1/teams/newcomers/deployments", bigger, format="json"), 409, "gpu_quota_exceeded")

    asked = person.post(
        "/api/v1/teams/newcomers/quota-requests",
        {"gpus": {"nvidia-l4": 6}, "reason": "batch scoring"},
        format="json",
    ).json()
    admin = client_with_token(UserFactory(username="ops", backstage_ref=None, is_staff=True))
    queue = admin.get("/api/v1/quota-requests").json()["results"]
    assert [(entry["team"], entry["gpus"]) for entry in queue] == [("newcomers", {"nvidia-l4": 6})]
    assert admin.post(f"/api/v1/teams/newcomers/quota-requests/{asked['id']}/approve").status_code == 200
    assert person.post("/api/v1/teams/newcomers/deployments", bigger, format="json").status_code == 201
    assert sorted(Deployment.objects.filter(team__slug="newcomers").values_list("name", flat=True)) == ["batch", "chat"]
    assert Team.objects.get(slug="newcomers").quota_requests.get().status == "approved"


def test_anonymous_client_is_refused() -> None:
    assert APIClient().get("/api/v1/quota-requests").status_code == 401
