"""Tenancy API: the authorization matrix of every endpoint, validation problems, the last admin, quotas."""

from __future__ import annotations

import pytest
from django.conf import settings

from portal.core.models import AuditEvent
from portal.tenancy.models import Membership, Role, Team, TeamGpuQuota, User
from tests.conftest import ROLES, RoleMatrix, assert_problem, client_with_token

pytestmark = pytest.mark.django_db

MEMBER_READ = {"anonymous": 401, "outsider": 404, "viewer": 200, "developer": 200, "admin": 200, "platform_admin": 200}
ADMIN_WRITE = {"anonymous": 401, "outsider": 404, "viewer": 403, "developer": 403, "admin": 200, "platform_admin": 200}


def _state(matrix: RoleMatrix) -> tuple[object, ...]:
    team = Team.objects.get(pk=matrix.team.pk)
    quota = team.quota
    return (
        team.display_name,
        team.status,
        sorted(Membership.objects.filter(team=team).values_list("user__backstage_ref", "role")),
        quota.max_deployments,
        quota.tokens_per_minute,
        quota.budget_policy,
        sorted(TeamGpuQuota.objects.filter(quota=quota).values_list("accelerator_type", "gpus")),
    )


@pytest.mark.parametrize("who", ROLES)
def test_me(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/me")
    if who == "anonymous":
        assert_problem(response, 401)
        return
    assert response.status_code == 200
    body = response.json()
    assert body["platform_admin"] is (who == "platform_admin")
    teams = {entry["team"]: entry["role"] for entry in body["teams"]}
    expected = {"viewer": {"alpha": "viewer"}, "developer": {"alpha": "developer"}, "admin": {"alpha": "admin"}}
    expected |= {"outsider": {"beta": "admin"}, "platform_admin": {}}
    assert teams == expected[who]


@pytest.mark.parametrize("who", ROLES)
def test_team_list_shows_only_own_teams(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams")
    if who == "anonymous":
        assert_problem(response, 401)
        return
    assert response.status_code == 200
    slugs = sorted(item["slug"] for item in response.json()["results"])
    expected = {"outsider": ["beta"], "platform_admin": ["alpha", "beta"]}.get(who, ["alpha"])
    assert slugs == expected


@pytest.mark.parametrize("who", ROLES)
def test_team_create(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    if who == "anonymous":
        assert_problem(response, 401)
        assert not Team.objects.filter(slug="gamma").exists()
        return
    # Any signed-in person may create a team (PORTAL_TEAM_CREATION=members) and becomes its admin.
    assert settings.TEAM_CREATION == "members"
    assert response.status_code == 201, response.content
    creator = getattr(matrix, who)
    assert Membership.objects.get(team__slug="gamma", user=creator).role == Role.ADMIN
    event = AuditEvent.objects.get(action="team.create")
    assert event.actor_id == creator.pk


@pytest.mark.parametrize("who", ROLES)
def test_team_detail_read(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams/alpha")
    assert response.status_code == MEMBER_READ[who]
    if who == "outsider":
        assert_problem(response, 404)


@pytest.mark.parametrize("who", ROLES)
def test_team_update(matrix: RoleMatrix, who: str) -> None:
    before = _state(matrix)
    response = matrix.client(who).patch("/api/v1/teams/alpha", {"display_name": "Renamed"}, format="json")
    assert response.status_code == ADMIN_WRITE[who], response.content
    if ADMIN_WRITE[who] == 200:
        assert Team.objects.get(slug="alpha").display_name == "Renamed"
        assert AuditEvent.objects.filter(action="team.update").exists()
    else:
        assert _state(matrix) == before
        assert not AuditEvent.objects.filter(action="team.update").exists()


@pytest.mark.parametrize("who", ["admin", "platform_admin"])
def test_only_platform_admins_suspend_a_team(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).patch("/api/v1/teams/alpha", {"status": "suspended"}, format="json")
    if who == "admin":
        assert_problem(response, 403, "platform_admin_required")
        assert Team.objects.get(slug="alpha").status == "active"
    else:
        assert response.status_code == 200
        assert Team.objects.get(slug="alpha").status == "suspended"


@pytest.mark.parametrize("who", ROLES)
def test_member_list_and_detail(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    listing = client.get("/api/v1/teams/alpha/members")
    detail = client.get("/api/v1/teams/alpha/members/user:default/viewer")
    assert listing.status_code == MEMBER_READ[who]
    assert detail.status_code == MEMBER_READ[who]
    if MEMBER_READ[who] == 200:
        assert {item["role"] for item in listing.json()["results"]} == {"viewer", "developer", "admin"}


@pytest.mark.parametrize("who", ROLES)
def test_member_add(matrix: RoleMatrix, who: str) -> None:
    before = _state(matrix)
    response = matrix.client(who).post(
        "/api/v1/teams/alpha/members", {"user": "user:default/newcomer", "role": "developer"}, format="json"
    )
    expected = {**ADMIN_WRITE, "admin": 201, "platform_admin": 201}[who]
    assert response.status_code == expected, response.content
    if expected == 201:
        # Users are created from their Backstage ref on first sight.
        newcomer = User.objects.get(backstage_ref="user:default/newcomer")
        assert Membership.objects.get(team=matrix.team, user=newcomer).role == Role.DEVELOPER
    else:
        assert _state(matrix) == before
        assert not User.objects.filter(backstage_ref="user:default/newcomer").exists()


@pytest.mark.parametrize("who", ROLES)
def test_member_role_change_and_removal(matrix: RoleMatrix, who: str) -> None:
    before = _state(matrix)
    client = matrix.client(who)
    changed = client.patch("/api/v1/teams/alpha/members/user:default/viewer", {"role": "developer"}, format="json")
    assert changed.status_code == ADMIN_WRITE[who]
    removed = client.delete("/api/v1/teams/alpha/members/user:default/developer")
    assert removed.status_code == {**ADMIN_WRITE, "admin": 204, "platform_admin": 204}[who]
    if ADMIN_WRITE[who] != 200:
        assert _state(matrix) == before
    else:
        roles = dict(Membership.objects.filter(team=matrix.team).values_list("user__backstage_ref", "role"))
        assert roles == {"user:default/viewer": "developer", "user:default/admin": "admin"}


def test_the_last_admin_can_be_neither_demoted_nor_removed(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    demote = client.patch("/api/v1/teams/alpha/members/user:default/admin", {"role": "viewer"}, format="json")
    body = assert_problem(demote, 409)
    assert "admin" in body["detail"].lower()
    assert_problem(client.delete("/api/v1/teams/alpha/members/user:default/admin"), 409)
    assert Membership.objects.get(team=matrix.team, user=matrix.admin).role == Role.ADMIN


def test_unknown_member_is_404(matrix: RoleMatrix) -> None:
    assert_problem(matrix.client("admin").get("/api/v1/teams/alpha/members/user:default/nobody"), 404)


@pytest.mark.parametrize("who", ROLES)
def test_quota_read(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams/alpha/quota")
    assert response.status_code == MEMBER_READ[who]
    if response.status_code == 200:
        body = response.json()
        defaults = settings.QUOTA_DEFAULTS
        assert body["max_deployments"] == defaults["max_deployments"]
        assert body["tokens_per_minute"] == defaults["tokens_per_minute"]
        assert body["budget_policy"] == defaults["budget_policy"]


@pytest.mark.parametrize("who", ROLES)
def test_quota_write_is_for_platform_admins(matrix: RoleMatrix, who: str) -> None:
    before = _state(matrix)
    response = matrix.client(who).patch(
        "/api/v1/teams/alpha/quota", {"gpus": {"nvidia-l4": 6}, "max_deployments": 7}, format="json"
    )
    expected = {**ADMIN_WRITE, "admin": 403}[who]
    assert response.status_code == expected, response.content
    if expected == 200:
        assert response.json()["gpus"] == {"nvidia-l4": 6}
        assert _state(matrix)[3] == 7
        event = AuditEvent.objects.get(action="team_quota.update")
        assert event.before != event.after
    else:
        assert _state(matrix) == before
        assert not AuditEvent.objects.filter(action="team_quota.update").exists()


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("/api/v1/teams", "post", {"slug": "Bad_Slug", "display_name": "x"}, "slug"),
        ("/api/v1/teams", "post", {"slug": "ok-team"}, "display_name"),
        ("/api/v1/teams/alpha/members", "post", {"user": "user:default/x", "role": "owner"}, "role"),
        ("/api/v1/teams/alpha/quota", "patch", {"max_deployments": -1}, "max_deployments"),
        ("/api/v1/teams/alpha/quota", "patch", {"budget_policy": "explode"}, "budget_policy"),
        ("/api/v1/teams/alpha/quota", "patch", {"monthly_budget": "-5"}, "monthly_budget"),
    ],
)
def test_validation_problems_name_the_field_and_change_nothing(
    matrix: RoleMatrix, path: str, method: str, body: dict[str, object], field: str
) -> None:
    client = matrix.client("platform_admin")
    before = (_state(matrix), Team.objects.count(), AuditEvent.objects.count())
    response = getattr(client, method)(path, body, format="json")
    problem = assert_problem(response, 400)
    assert field in {entry["field"] for entry in problem["errors"]}, problem
    assert (_state(matrix), Team.objects.count(), AuditEvent.objects.count()) == before


def test_team_create_replays_with_the_same_idempotency_key(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = {"slug": "delta", "display_name": "Delta"}
    first = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert Team.objects.filter(slug="delta").count() == 1
    other = client.post(
        "/api/v1/teams", {"slug": "epsilon", "display_name": "E"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert_problem(other, 422)
    assert not Team.objects.filter(slug="epsilon").exists()


def test_backstage_principal_acts_for_a_user_seen_for_the_first_time(matrix: RoleMatrix) -> None:
    service = User.objects.create(username="backstage", kind=User.Kind.SERVICE)
    client = client_with_token(service, scopes=["backstage"])
    response = client.post(
        "/api/v1/teams",
        {"slug": "zeta", "display_name": "Zeta"},
        format="json",
        HTTP_X_BACKSTAGE_USER="user:default/first-timer",
    )
    assert response.status_code == 201, response.content
    person = User.objects.get(backstage_ref="user:default/first-timer")
    assert Membership.objects.get(team__slug="zeta", user=person).role == Role.ADMIN
