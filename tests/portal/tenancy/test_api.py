"""Tenancy API: every endpoint's authorization matrix, exact shapes, validation problems, audit, idempotency."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from portal.core.models import AuditEvent
from portal.tenancy.models import Membership, Role, Team, TeamGpuQuota, TeamQuota, User
from tests.conftest import ROLES, RoleMatrix, assert_problem, client_with_token
from tests.factories import MembershipFactory, ServicePrincipalFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

MEMBER_READ = {"anonymous": 401, "outsider": 404, "viewer": 200, "developer": 200, "admin": 200, "platform_admin": 200}
TEAM_ADMIN_WRITE = {
    "anonymous": 401,
    "outsider": 404,
    "viewer": 403,
    "developer": 403,
    "admin": 200,
    "platform_admin": 200,
}
PLATFORM_ADMIN_WRITE = {**TEAM_ADMIN_WRITE, "admin": 403}
REFUSAL_CODES = {401: "not_authenticated", 404: "team_not_found"}

TEAM_FIELDS = {
    "slug",
    "display_name",
    "description",
    "backstage_group_ref",
    "cost_center",
    "status",
    "created_at",
    "updated_at",
}
QUOTA_FIELDS = {
    "team",
    "gpus",
    "max_deployments",
    "tokens_per_minute",
    "tokens_per_day",
    "monthly_budget",
    "budget_policy",
    "updated_at",
}
LLMD_AND_KUEUE_QUOTA_FIELDS = {"serving_tier", "gpu_borrowing_limits"}


def tenancy_state() -> dict[str, list[tuple[Any, ...]]]:
    """Everything tenancy stores (and the audit log), to show a refused request changed nothing."""
    return {
        "users": sorted(User.objects.values_list("username", "backstage_ref", "kind", "is_staff")),
        "teams": sorted(
            Team.objects.values_list(
                "slug", "display_name", "description", "backstage_group_ref", "cost_center", "status"
            )
        ),
        "memberships": sorted(Membership.objects.values_list("team__slug", "user__username", "role")),
        "quotas": sorted(
            TeamQuota.objects.values_list(
                "team__slug",
                "max_deployments",
                "tokens_per_minute",
                "tokens_per_day",
                "monthly_budget",
                "budget_policy",
            )
        ),
        "gpu_limits": sorted(TeamGpuQuota.objects.values_list("quota__team__slug", "accelerator_type", "gpus")),
        "audit": sorted(AuditEvent.objects.values_list("id", flat=True)),  # type: ignore[dict-item]
    }


def field_entries(problem: dict[str, Any]) -> dict[str, str]:
    """Field name -> code of a validation problem's entries, each entry checked for its shape."""
    entries = problem["errors"]
    assert entries, problem
    for entry in entries:
        assert set(entry) == {"field", "code", "message"}, entry
        assert entry["message"]
    return {entry["field"]: entry["code"] for entry in entries}


def backstage_client(*, scopes: list[str] | None = None) -> APIClient:
    return client_with_token(ServicePrincipalFactory(username="service:backstage"), scopes=scopes or ["backstage"])


def audit_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- /me ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_me_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/me")
    if who == "anonymous":
        assert_problem(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == 'Bearer realm="genai-portal"'
        return
    assert response.status_code == 200
    user = getattr(matrix, who)
    teams = {
        "outsider": [{"team": "beta", "display_name": "Beta", "role": "admin"}],
        "viewer": [{"team": "alpha", "display_name": "Alpha", "role": "viewer"}],
        "developer": [{"team": "alpha", "display_name": "Alpha", "role": "developer"}],
        "admin": [{"team": "alpha", "display_name": "Alpha", "role": "admin"}],
        "platform_admin": [],
    }[who]
    assert response.json() == {
        "user": {
            "ref": "platform-admin" if who == "platform_admin" else f"user:default/{who}",
            "username": user.username,
            "kind": "person",
            "email": user.email,
            "is_staff": who == "platform_admin",
        },
        "platform_admin": who == "platform_admin",
        "acting_through": None,
        "scopes": [],
        "backstage_user_token_required": False,
        "teams": teams,
    }


def test_me_tells_backstage_whether_user_tokens_are_required(matrix: RoleMatrix, settings: Any) -> None:
    """Backstage's plugin reads it at startup to catch forwardUserToken: false against a portal that verifies them."""
    backstage = client_with_token(ServicePrincipalFactory(username="service:backstage"), scopes=["backstage"])
    assert backstage.get("/api/v1/me").json()["backstage_user_token_required"] is False
    settings.BACKSTAGE_JWKS_URL = "http://127.0.0.1:9/api/auth/.well-known/jwks.json"
    body = backstage.get("/api/v1/me").json()
    assert (body["user"]["ref"], body["scopes"], body["backstage_user_token_required"]) == (
        "service:backstage",
        ["backstage"],
        True,
    )


def test_me_lists_every_team_of_the_caller_in_slug_order(matrix: RoleMatrix) -> None:
    MembershipFactory(team=TeamFactory(slug="aardvark"), user=matrix.developer, role=Role.VIEWER)
    teams = matrix.client("developer").get("/api/v1/me").json()["teams"]
    assert [(entry["team"], entry["role"]) for entry in teams] == [("aardvark", "viewer"), ("alpha", "developer")]


def test_me_through_backstage_creates_the_user_on_first_sight(matrix: RoleMatrix) -> None:
    client = backstage_client()
    assert not User.objects.filter(backstage_ref="user:default/first-timer").exists()
    response = client.get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/first-timer")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"] == {
        "ref": "user:default/first-timer",
        "username": "user:default/first-timer",
        "kind": "person",
        "email": "",
        "is_staff": False,
    }
    assert (body["acting_through"], body["scopes"], body["teams"], body["platform_admin"]) == (
        "service:backstage",
        ["backstage"],
        [],
        False,
    )
    person = User.objects.get(backstage_ref="user:default/first-timer")
    assert person.kind == User.Kind.PERSON
    assert not person.has_usable_password()
    [event] = audit_events("user.create_from_backstage")
    assert (event.actor_id, event.actor_label, event.target_id, event.after) == (
        None,
        "system",
        str(person.pk),
        {"backstage_ref": "user:default/first-timer"},
    )
    # Seen again: the same user, no second creation.
    assert client.get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/first-timer").status_code == 200
    assert User.objects.filter(backstage_ref="user:default/first-timer").count() == 1
    assert len(audit_events("user.create_from_backstage")) == 1


def test_me_through_backstage_reports_the_existing_users_teams(matrix: RoleMatrix) -> None:
    body = backstage_client().get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/admin").json()
    assert body["user"]["ref"] == "user:default/admin"
    assert body["teams"] == [{"team": "alpha", "display_name": "Alpha", "role": "admin"}]
    assert User.objects.filter(backstage_ref="user:default/admin").count() == 1


def test_staff_session_is_a_platform_admin_and_other_sessions_are_not_authenticated(matrix: RoleMatrix) -> None:
    staff = APIClient()
    staff.force_login(matrix.platform_admin)
    body = staff.get("/api/v1/me").json()
    assert (body["platform_admin"], body["scopes"], body["acting_through"]) == (True, [], None)
    person = APIClient()
    person.force_login(matrix.admin)
    assert_problem(person.get("/api/v1/me"), 401, "not_authenticated")


@pytest.mark.parametrize(
    ("header", "code"),
    [("Bearer", "malformed_token"), ("Bearer not-a-token", "invalid_token"), ("Bearer a b", "malformed_token")],
)
def test_bad_tokens_are_401_with_a_code(db: None, header: str, code: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_problem(client.get("/api/v1/me"), 401, code)


# --- /teams: list ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_team_list_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams")
    if who == "anonymous":
        assert_problem(response, 401, "not_authenticated")
        return
    assert response.status_code == 200
    body = response.json()
    expected = {"outsider": ["beta"], "platform_admin": ["alpha", "beta"]}.get(who, ["alpha"])
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == len(expected)
    assert [item["slug"] for item in body["results"]] == expected
    for item in body["results"]:
        assert set(item) == TEAM_FIELDS


def test_team_list_is_paginated_in_slug_order(matrix: RoleMatrix) -> None:
    for slug in ("delta", "gamma", "epsilon"):
        TeamFactory(slug=slug)
    client = matrix.client("platform_admin")
    first = client.get("/api/v1/teams", {"page_size": 2}).json()
    assert first["count"] == 5
    assert [item["slug"] for item in first["results"]] == ["alpha", "beta"]
    assert first["previous"] is None
    assert "page=2" in first["next"]
    third = client.get("/api/v1/teams", {"page_size": 2, "page": 3}).json()
    assert [item["slug"] for item in third["results"]] == ["gamma"]
    assert third["next"] is None
    assert_problem(client.get("/api/v1/teams", {"page_size": 2, "page": 4}), 404, "not_found")


def test_team_list_filters_by_status_and_by_text_in_slug_or_display_name(matrix: RoleMatrix) -> None:
    TeamFactory(slug="gamma", display_name="Search Quality", status=Team.Status.SUSPENDED)
    TeamFactory(slug="search-infra", display_name="Infra")
    client = matrix.client("platform_admin")

    def slugs(**params: str) -> list[str]:
        response = client.get("/api/v1/teams", params)
        assert response.status_code == 200, response.content
        return [item["slug"] for item in response.json()["results"]]

    assert slugs(status="suspended") == ["gamma"]
    assert slugs(status="active") == ["alpha", "beta", "search-infra"]
    assert slugs(search="SEARCH") == ["gamma", "search-infra"]
    assert slugs(search="search", status="active") == ["search-infra"]
    assert slugs(search="nothing-like-this") == []


def test_team_list_filters_stay_within_the_callers_teams(matrix: RoleMatrix) -> None:
    TeamFactory(slug="alphabet", display_name="Alpha Bet")
    client = matrix.client("outsider")
    assert client.get("/api/v1/teams", {"search": "alpha"}).json()["results"] == []
    assert [
        item["slug"] for item in matrix.client("viewer").get("/api/v1/teams", {"search": "alpha"}).json()["results"]
    ] == ["alpha"]


def test_team_list_refuses_an_unknown_status_filter(matrix: RoleMatrix) -> None:
    problem = assert_problem(matrix.client("platform_admin").get("/api/v1/teams", {"status": "Suspended"}), 400)
    assert field_entries(problem) == {"status": "invalid_choice"}


# --- /teams: create ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_team_create_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    response = client.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    if who == "anonymous":
        assert_problem(response, 401, "not_authenticated")
        assert tenancy_state() == before
        return
    # PORTAL_TEAM_CREATION defaults to "members": any signed-in person may create a team and becomes its admin.
    assert response.status_code == 201, response.content
    creator = getattr(matrix, who)
    assert list(Membership.objects.filter(team__slug="gamma").values_list("user", "role")) == [(creator.pk, "admin")]
    assert [event.actor_id for event in audit_events("team.create")] == [creator.pk]
    assert [event.actor_id for event in audit_events("membership.add")] == [creator.pk]


def test_team_create_answers_the_team_with_its_location(matrix: RoleMatrix) -> None:
    response = matrix.client("developer").post(
        "/api/v1/teams",
        {
            "slug": "gamma",
            "display_name": "  Gamma  ",
            "description": "Search relevance",
            "backstage_group_ref": "group:default/gamma",
            "cost_center": "CC-42",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response["Location"] == "/api/v1/teams/gamma"
    body = response.json()
    assert set(body) == TEAM_FIELDS
    assert {key: body[key] for key in TEAM_FIELDS - {"created_at", "updated_at"}} == {
        "slug": "gamma",
        "display_name": "Gamma",
        "description": "Search relevance",
        "backstage_group_ref": "group:default/gamma",
        "cost_center": "CC-42",
        "status": "active",
    }
    assert matrix.client("developer").get("/api/v1/teams/gamma").json() == body


def test_team_create_with_a_blank_group_ref_stores_none(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    for slug in ("gamma", "delta"):  # two blank refs must not clash on the unique column
        response = client.post(
            "/api/v1/teams", {"slug": slug, "display_name": slug, "backstage_group_ref": ""}, format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["backstage_group_ref"] is None
    assert list(Team.objects.filter(slug__in=["gamma", "delta"]).values_list("backstage_group_ref", flat=True)) == [
        None,
        None,
    ]


def test_team_create_records_audit_events_with_actor_and_after(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    client.post(
        "/api/v1/teams",
        {"slug": "gamma", "display_name": "Gamma", "cost_center": "CC-1"},
        format="json",
    )
    team = Team.objects.get(slug="gamma")
    [created] = audit_events("team.create")
    assert (created.actor_id, created.actor_label, created.target_type, created.target_id, created.team_slug) == (
        matrix.developer.pk,
        "user:default/developer",
        "team",
        str(team.pk),
        "gamma",
    )
    assert created.before is None
    assert created.after == {
        "slug": "gamma",
        "display_name": "Gamma",
        "description": "",
        "backstage_group_ref": None,
        "cost_center": "CC-1",
        "status": "active",
    }
    [joined] = audit_events("membership.add")
    assert (joined.actor_id, joined.team_slug, joined.after) == (
        matrix.developer.pk,
        "gamma",
        {"user": "user:default/developer", "role": "admin"},
    )


def test_team_create_takes_the_quota_defaults_from_settings(matrix: RoleMatrix, settings: Any) -> None:
    settings.QUOTA_DEFAULTS = {
        "max_deployments": 3,
        "tokens_per_minute": 1234,
        "tokens_per_day": 56789,
        "monthly_budget": Decimal("250.50"),
        "budget_policy": "throttle",
        "gpus": {"nvidia-l4": 2, "nvidia-h100-80gb": 0},
    }
    client = matrix.client("developer")
    assert client.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json").status_code == 201
    quota = client.get("/api/v1/teams/gamma/quota").json()
    assert {key: quota[key] for key in QUOTA_FIELDS - {"updated_at"}} == {
        "team": "gamma",
        "gpus": {"nvidia-h100-80gb": 0, "nvidia-l4": 2},
        "max_deployments": 3,
        "tokens_per_minute": 1234,
        "tokens_per_day": 56789,
        "monthly_budget": "250.50",
        "budget_policy": "throttle",
    }
    assert sorted(TeamGpuQuota.objects.filter(quota__team__slug="gamma").values_list("accelerator_type", "gpus")) == [
        ("nvidia-h100-80gb", 0),
        ("nvidia-l4", 2),
    ]


@pytest.mark.parametrize("who", ROLES)
def test_team_creation_restricted_to_platform_admins(matrix: RoleMatrix, who: str, settings: Any) -> None:
    settings.TEAM_CREATION = "admins"
    client = matrix.client(who)
    before = tenancy_state()
    response = client.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    expected = {"anonymous": 401, "platform_admin": 201}.get(who, 403)
    assert response.status_code == expected, response.content
    if expected == 201:
        assert Team.objects.filter(slug="gamma").exists()
        return
    assert_problem(response, expected, "team_creation_restricted" if expected == 403 else "not_authenticated")
    assert tenancy_state() == before


def test_restricted_team_creation_refuses_before_looking_at_the_body(matrix: RoleMatrix, settings: Any) -> None:
    settings.TEAM_CREATION = "admins"
    response = matrix.client("developer").post("/api/v1/teams", {"slug": "NOT VALID"}, format="json")
    assert_problem(response, 403, "team_creation_restricted")


def test_a_service_principal_without_a_person_cannot_create_a_team(matrix: RoleMatrix) -> None:
    client = backstage_client()
    before = tenancy_state()
    response = client.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    assert_problem(response, 403, "person_required")
    assert tenancy_state() == before


def test_an_admin_service_principal_creates_a_team_without_becoming_a_member(matrix: RoleMatrix) -> None:
    service = ServicePrincipalFactory(username="service:provisioner")
    client = client_with_token(service, scopes=["admin"])
    response = client.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    assert response.status_code == 201, response.content
    assert not Membership.objects.filter(team__slug="gamma").exists()
    [event] = audit_events("team.create")
    assert (event.actor_id, event.actor_label) == (service.pk, "service:provisioner")
    assert audit_events("membership.add") == []


def test_backstage_creates_a_team_for_a_person_seen_for_the_first_time(matrix: RoleMatrix) -> None:
    response = backstage_client().post(
        "/api/v1/teams",
        {"slug": "zeta", "display_name": "Zeta"},
        format="json",
        HTTP_X_BACKSTAGE_USER="user:default/first-timer",
    )
    assert response.status_code == 201, response.content
    person = User.objects.get(backstage_ref="user:default/first-timer")
    assert list(Membership.objects.filter(team__slug="zeta").values_list("user", "role")) == [(person.pk, "admin")]
    assert [event.actor_id for event in audit_events("team.create")] == [person.pk]


@pytest.mark.parametrize(
    "slug",
    [
        "Alpha",
        "-gamma",
        "gamma-",
        "gam_ma",
        "gam.ma",
        "gam ma",
        "gämma",
        "a" * 41,
        "",
    ],
)
def test_team_create_refuses_a_slug_that_is_not_a_dns_label(matrix: RoleMatrix, slug: str) -> None:
    client = matrix.client("developer")
    before = tenancy_state()
    problem = assert_problem(
        client.post("/api/v1/teams", {"slug": slug, "display_name": "Gamma"}, format="json"), 400, "validation_failed"
    )
    assert list(field_entries(problem)) == ["slug"]
    assert tenancy_state() == before


@pytest.mark.parametrize("slug", ["a", "0", "a-1", "a" * 40, "9-lives", "a--b"])
def test_team_create_accepts_every_dns_label_up_to_40_characters(matrix: RoleMatrix, slug: str) -> None:
    response = matrix.client("developer").post("/api/v1/teams", {"slug": slug, "display_name": "X"}, format="json")
    assert response.status_code == 201, response.content
    assert Team.objects.filter(slug=slug).exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"slug": "gamma"}, {"display_name": "required"}),
        ({"slug": "gamma", "display_name": "   "}, {"display_name": "blank"}),
        ({"display_name": "Gamma"}, {"slug": "required"}),
        (
            {"slug": "gamma", "display_name": "G", "backstage_group_ref": "team-a"},
            {"backstage_group_ref": "invalid_group_ref"},
        ),
        (
            {"slug": "gamma", "display_name": "G", "backstage_group_ref": "user:default/x"},
            {"backstage_group_ref": "invalid_group_ref"},
        ),
        ({"slug": "gamma", "display_name": "G", "cost_center": "x" * 65}, {"cost_center": "max_length"}),
        ({"slug": "gamma", "display_name": "G", "status": "suspended"}, {"status": "unknown_field"}),
        (
            {"slug": "Gamma", "colour": "blue"},
            {"slug": "invalid", "display_name": "required", "colour": "unknown_field"},
        ),
    ],
)
def test_team_create_validation_names_each_field(
    matrix: RoleMatrix, body: dict[str, object], expected: dict[str, str]
) -> None:
    client = matrix.client("developer")
    before = tenancy_state()
    problem = assert_problem(client.post("/api/v1/teams", body, format="json"), 400, "validation_failed")
    assert field_entries(problem) == expected
    assert tenancy_state() == before


def test_team_create_refuses_a_body_that_is_not_json(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    before = tenancy_state()
    response = client.post("/api/v1/teams", b"{not json", content_type="application/json")
    assert_problem(response, 400, "malformed_request")
    assert tenancy_state() == before


def test_team_create_with_a_taken_slug_is_a_conflict_that_changes_nothing(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    before = tenancy_state()
    response = client.post("/api/v1/teams", {"slug": "alpha", "display_name": "Mine now"}, format="json")
    assert_problem(response, 409, "team_exists")
    assert tenancy_state() == before


def test_team_create_with_a_taken_group_ref_is_a_conflict(matrix: RoleMatrix) -> None:
    Team.objects.filter(slug="beta").update(backstage_group_ref="group:default/beta")
    client = matrix.client("developer")
    before = tenancy_state()
    response = client.post(
        "/api/v1/teams",
        {"slug": "gamma", "display_name": "Gamma", "backstage_group_ref": "group:default/beta"},
        format="json",
    )
    assert_problem(response, 409, "group_ref_taken")
    assert tenancy_state() == before


# --- Idempotency-Key --------------------------------------------------------------------------------


def test_team_create_replays_the_first_response_for_the_same_key_and_body(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = {"slug": "delta", "display_name": "Delta"}
    first = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="create-delta")
    second = client.post("/api/v1/teams", body, format="json", HTTP_IDEMPOTENCY_KEY="create-delta")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second["Location"] == first["Location"] == "/api/v1/teams/delta"
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Team.objects.filter(slug="delta").count() == 1
    assert Membership.objects.filter(team__slug="delta").count() == 1
    assert len(audit_events("team.create")) == 1


def test_team_create_with_a_reused_key_and_another_body_is_422(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    client.post("/api/v1/teams", {"slug": "delta", "display_name": "Delta"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    before = tenancy_state()
    response = client.post(
        "/api/v1/teams", {"slug": "epsilon", "display_name": "E"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert_problem(response, 422, "idempotency_key_reused")
    assert tenancy_state() == before


def test_team_create_without_a_key_is_not_replayed(matrix: RoleMatrix) -> None:
    client = matrix.client("developer")
    body = {"slug": "delta", "display_name": "Delta"}
    assert client.post("/api/v1/teams", body, format="json").status_code == 201
    assert_problem(client.post("/api/v1/teams", body, format="json"), 409, "team_exists")


def test_member_add_replays_instead_of_conflicting(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    body = {"user": "user:default/newcomer", "role": "viewer"}
    first = client.post("/api/v1/teams/alpha/members", body, format="json", HTTP_IDEMPOTENCY_KEY="add-newcomer")
    second = client.post("/api/v1/teams/alpha/members", body, format="json", HTTP_IDEMPOTENCY_KEY="add-newcomer")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert len(audit_events("membership.add")) == 1


# --- /teams/{team} -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_team_detail_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams/alpha")
    expected = MEMBER_READ[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES[expected])
        return
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TEAM_FIELDS
    assert (body["slug"], body["display_name"], body["status"]) == ("alpha", "Alpha", "active")


def test_an_unknown_team_is_404_even_for_platform_admins(matrix: RoleMatrix) -> None:
    for path in ("", "/members", "/members/user:default/admin", "/quota"):
        assert_problem(matrix.client("platform_admin").get(f"/api/v1/teams/nope{path}"), 404, "team_not_found")


@pytest.mark.parametrize("who", ROLES)
def test_team_update_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    response = client.patch("/api/v1/teams/alpha", {"display_name": "Renamed", "cost_center": "CC-7"}, format="json")
    expected = TEAM_ADMIN_WRITE[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES.get(expected, "insufficient_role"))
        assert tenancy_state() == before
        return
    assert response.status_code == 200, response.content
    assert (response.json()["display_name"], response.json()["cost_center"]) == ("Renamed", "CC-7")
    team = Team.objects.get(slug="alpha")
    assert (team.display_name, team.cost_center) == ("Renamed", "CC-7")
    [event] = audit_events("team.update")
    assert event.actor_id == getattr(matrix, who).pk
    assert (event.before["display_name"], event.after["display_name"]) == ("Alpha", "Renamed")
    assert (event.before["cost_center"], event.after["cost_center"]) == ("", "CC-7")


def test_team_update_audits_the_whole_before_and_after(matrix: RoleMatrix) -> None:
    matrix.client("admin").patch(
        "/api/v1/teams/alpha",
        {"description": "New words", "backstage_group_ref": "group:default/alpha"},
        format="json",
    )
    [event] = audit_events("team.update")
    common = {"slug": "alpha", "display_name": "Alpha", "cost_center": "", "status": "active"}
    assert event.before == {**common, "description": "", "backstage_group_ref": None}
    assert event.after == {**common, "description": "New words", "backstage_group_ref": "group:default/alpha"}
    assert (event.target_type, event.target_id, event.team_slug) == ("team", str(matrix.team.pk), "alpha")


def test_team_update_without_a_change_records_nothing(matrix: RoleMatrix) -> None:
    response = matrix.client("admin").patch("/api/v1/teams/alpha", {"display_name": "Alpha"}, format="json")
    assert response.status_code == 200
    empty = matrix.client("admin").patch("/api/v1/teams/alpha", {}, format="json")
    assert empty.status_code == 200
    assert AuditEvent.objects.filter(action__startswith="team.").count() == 0


def test_team_update_clears_the_group_ref_with_a_blank(matrix: RoleMatrix) -> None:
    Team.objects.filter(slug="alpha").update(backstage_group_ref="group:default/alpha")
    response = matrix.client("admin").patch("/api/v1/teams/alpha", {"backstage_group_ref": ""}, format="json")
    assert response.json()["backstage_group_ref"] is None
    assert Team.objects.get(slug="alpha").backstage_group_ref is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"display_name": ""}, {"display_name": "blank"}),
        ({"display_name": "x" * 201}, {"display_name": "max_length"}),
        ({"backstage_group_ref": "alpha"}, {"backstage_group_ref": "invalid_group_ref"}),
        ({"status": "deleted"}, {"status": "invalid_choice"}),
        ({"slug": "renamed"}, {"slug": "read_only"}),
        ({"colour": "blue", "display_name": "Renamed"}, {"colour": "unknown_field"}),
    ],
)
def test_team_update_validation_names_each_field(
    matrix: RoleMatrix, body: dict[str, object], expected: dict[str, str]
) -> None:
    client = matrix.client("platform_admin")
    before = tenancy_state()
    problem = assert_problem(client.patch("/api/v1/teams/alpha", body, format="json"), 400, "validation_failed")
    assert field_entries(problem) == expected
    assert tenancy_state() == before


def test_team_update_to_a_taken_group_ref_is_a_conflict(matrix: RoleMatrix) -> None:
    Team.objects.filter(slug="beta").update(backstage_group_ref="group:default/beta")
    client = matrix.client("admin")
    before = tenancy_state()
    response = client.patch("/api/v1/teams/alpha", {"backstage_group_ref": "group:default/beta"}, format="json")
    assert_problem(response, 409, "group_ref_taken")
    assert tenancy_state() == before


def test_a_case_variant_of_a_taken_group_ref_is_a_conflict_on_create_and_update(matrix: RoleMatrix) -> None:
    # Backstage matches group refs ignoring case: a case variant is the same group, never a second link.
    Team.objects.filter(slug="beta").update(backstage_group_ref="group:default/beta")
    client = matrix.client("admin")
    before = tenancy_state()
    created = client.post(
        "/api/v1/teams",
        {"slug": "gamma", "display_name": "Gamma", "backstage_group_ref": "group:default/Beta"},
        format="json",
    )
    assert_problem(created, 409, "group_ref_taken")
    updated = client.patch("/api/v1/teams/alpha", {"backstage_group_ref": "Group:Default/BETA"}, format="json")
    assert_problem(updated, 409, "group_ref_taken")
    assert tenancy_state() == before


def test_group_refs_are_stored_in_lowercase(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    response = client.patch("/api/v1/teams/alpha", {"backstage_group_ref": "group:default/Alpha-Team"}, format="json")
    assert response.json()["backstage_group_ref"] == "group:default/alpha-team"
    response = client.post(
        "/api/v1/teams",
        {"slug": "gamma", "display_name": "Gamma", "backstage_group_ref": "group:Default/Gamma"},
        format="json",
    )
    assert response.json()["backstage_group_ref"] == "group:default/gamma"
    assert sorted(Team.objects.exclude(backstage_group_ref=None).values_list("backstage_group_ref", flat=True)) == [
        "group:default/alpha-team",
        "group:default/gamma",
    ]


def test_a_mixed_case_backstage_user_is_the_user_of_the_lowercase_ref(matrix: RoleMatrix) -> None:
    body = backstage_client().get("/api/v1/me", HTTP_X_BACKSTAGE_USER="user:default/Admin").json()
    assert body["user"]["ref"] == "user:default/admin"
    assert body["teams"] == [{"team": "alpha", "display_name": "Alpha", "role": "admin"}]
    assert not User.objects.filter(backstage_ref__iexact="user:default/admin").exclude(pk=matrix.admin.pk).exists()
    member = matrix.client("viewer").get("/api/v1/teams/alpha/members/user:default/Developer")
    assert member.json()["user"] == "user:default/developer"


@pytest.mark.parametrize("who", ROLES)
def test_team_suspension_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    # A rename riding along with a refused suspension must not be applied either.
    response = client.patch("/api/v1/teams/alpha", {"status": "suspended", "display_name": "Renamed"}, format="json")
    expected = PLATFORM_ADMIN_WRITE[who]
    if expected != 200:
        code = {403: "platform_admin_required" if who == "admin" else "insufficient_role"}.get(expected)
        assert_problem(response, expected, code or REFUSAL_CODES[expected])
        assert tenancy_state() == before
        return
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["display_name"]) == ("suspended", "Renamed")
    [suspended] = audit_events("team.suspend")
    assert suspended.actor_id == matrix.platform_admin.pk
    assert (suspended.before["status"], suspended.after["status"]) == ("active", "suspended")
    assert len(audit_events("team.update")) == 1


def test_platform_admin_reactivates_a_team_and_a_repeated_status_is_a_no_op(matrix: RoleMatrix) -> None:
    client = matrix.client("platform_admin")
    assert client.patch("/api/v1/teams/alpha", {"status": "suspended"}, format="json").status_code == 200
    assert client.patch("/api/v1/teams/alpha", {"status": "suspended"}, format="json").status_code == 200
    assert len(audit_events("team.suspend")) == 1
    response = client.patch("/api/v1/teams/alpha", {"status": "active"}, format="json")
    assert response.json()["status"] == "active"
    [reactivated] = audit_events("team.reactivate")
    assert (reactivated.before["status"], reactivated.after["status"]) == ("suspended", "active")


def test_team_admin_may_send_the_current_status_unchanged(matrix: RoleMatrix) -> None:
    response = matrix.client("admin").patch("/api/v1/teams/alpha", {"status": "active"}, format="json")
    assert response.status_code == 200
    assert AuditEvent.objects.filter(action__startswith="team.").count() == 0


def test_teams_cannot_be_deleted(matrix: RoleMatrix) -> None:
    response = matrix.client("platform_admin").delete("/api/v1/teams/alpha")
    assert_problem(response, 405, "method_not_allowed")
    assert Team.objects.filter(slug="alpha").exists()


# --- /teams/{team}/members --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_member_list_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams/alpha/members")
    expected = MEMBER_READ[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES[expected])
        return
    body = response.json()
    assert body["count"] == 3
    assert [(item["user"], item["role"], item["team"]) for item in body["results"]] == [
        ("user:default/admin", "admin", "alpha"),
        ("user:default/developer", "developer", "alpha"),
        ("user:default/viewer", "viewer", "alpha"),
    ]
    assert set(body["results"][0]) == {"team", "user", "role", "created_at"}


def test_member_list_filters_by_role_and_paginates(matrix: RoleMatrix) -> None:
    client = matrix.client("viewer")
    admins = client.get("/api/v1/teams/alpha/members", {"role": "admin"}).json()
    assert [item["user"] for item in admins["results"]] == ["user:default/admin"]
    page = client.get("/api/v1/teams/alpha/members", {"page_size": 2, "page": 2}).json()
    assert (page["count"], [item["user"] for item in page["results"]]) == (3, ["user:default/viewer"])


def test_member_list_refuses_an_unknown_role_filter(matrix: RoleMatrix) -> None:
    problem = assert_problem(matrix.client("viewer").get("/api/v1/teams/alpha/members", {"role": "owner"}), 400)
    assert field_entries(problem) == {"role": "invalid_choice"}


@pytest.mark.parametrize("who", ROLES)
def test_member_detail_matrix(matrix: RoleMatrix, who: str) -> None:
    response = matrix.client(who).get("/api/v1/teams/alpha/members/user:default/viewer")
    expected = MEMBER_READ[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES[expected])
        return
    body = response.json()
    assert {key: body[key] for key in ("team", "user", "role")} == {
        "team": "alpha",
        "user": "user:default/viewer",
        "role": "viewer",
    }


def test_member_detail_finds_members_by_username_and_by_short_ref(matrix: RoleMatrix) -> None:
    MembershipFactory(team=matrix.team, user=matrix.platform_admin, role=Role.VIEWER)
    client = matrix.client("viewer")
    assert client.get("/api/v1/teams/alpha/members/platform-admin").json()["user"] == "platform-admin"
    # Backstage refs may omit the namespace, here as when adding a member.
    assert client.get("/api/v1/teams/alpha/members/user:developer").json()["user"] == "user:default/developer"


def test_a_member_of_another_team_is_not_found(matrix: RoleMatrix) -> None:
    client = matrix.client("platform_admin")
    assert_problem(client.get("/api/v1/teams/alpha/members/user:default/outsider"), 404, "member_not_found")
    assert_problem(client.get("/api/v1/teams/alpha/members/user:default/nobody"), 404, "member_not_found")


@pytest.mark.parametrize("who", ROLES)
def test_member_add_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    response = client.post(
        "/api/v1/teams/alpha/members", {"user": "user:default/newcomer", "role": "developer"}, format="json"
    )
    expected = {**TEAM_ADMIN_WRITE, "admin": 201, "platform_admin": 201}[who]
    if expected != 201:
        assert_problem(response, expected, REFUSAL_CODES.get(expected, "insufficient_role"))
        assert tenancy_state() == before
        return
    assert response.status_code == 201, response.content
    body = response.json()
    assert {key: body[key] for key in ("team", "user", "role")} == {
        "team": "alpha",
        "user": "user:default/newcomer",
        "role": "developer",
    }
    # Users are created from their Backstage ref on first sight.
    newcomer = User.objects.get(backstage_ref="user:default/newcomer")
    assert newcomer.kind == User.Kind.PERSON
    membership = Membership.objects.get(team=matrix.team, user=newcomer)
    assert membership.role == Role.DEVELOPER
    [event] = audit_events("membership.add")
    assert (event.actor_id, event.target_type, event.target_id, event.team_slug) == (
        getattr(matrix, who).pk,
        "membership",
        str(membership.pk),
        "alpha",
    )
    assert event.after == {"user": "user:default/newcomer", "role": "developer"}
    assert len(audit_events("user.create_from_backstage")) == 1


def test_member_add_of_an_existing_user_by_username_and_by_short_ref(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    by_username = client.post(
        "/api/v1/teams/alpha/members", {"user": "platform-admin", "role": "viewer"}, format="json"
    )
    assert by_username.status_code == 201, by_username.content
    assert by_username.json()["user"] == "platform-admin"
    short = client.post("/api/v1/teams/alpha/members", {"user": "user:outsider", "role": "viewer"}, format="json")
    assert short.status_code == 201, short.content
    assert short.json()["user"] == "user:default/outsider"
    assert Membership.objects.get(team=matrix.team, user=matrix.outsider).role == Role.VIEWER
    assert audit_events("user.create_from_backstage") == []


def test_member_add_through_backstage_acts_as_the_asserted_team_admin(matrix: RoleMatrix) -> None:
    client = backstage_client()
    response = client.post(
        "/api/v1/teams/alpha/members",
        {"user": "user:default/newcomer", "role": "viewer"},
        format="json",
        HTTP_X_BACKSTAGE_USER="user:default/admin",
    )
    assert response.status_code == 201, response.content
    assert audit_events("membership.add")[0].actor_id == matrix.admin.pk
    before = tenancy_state()
    refused = client.post(
        "/api/v1/teams/alpha/members",
        {"user": "user:default/another", "role": "viewer"},
        format="json",
        HTTP_X_BACKSTAGE_USER="user:default/viewer",
    )
    assert_problem(refused, 403, "insufficient_role")
    assert tenancy_state() == before


def test_a_user_seen_first_through_backstage_has_no_access_to_the_team(matrix: RoleMatrix) -> None:
    client = backstage_client()
    response = client.get("/api/v1/teams/alpha", HTTP_X_BACKSTAGE_USER="user:default/stranger")
    assert_problem(response, 404, "team_not_found")
    assert User.objects.filter(backstage_ref="user:default/stranger", kind="person").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"user": "user:default/newcomer", "role": "owner"}, {"role": "invalid_choice"}),
        ({"user": "user:default/newcomer"}, {"role": "required"}),
        ({"role": "viewer"}, {"user": "required"}),
        ({"user": "user:default/Bad Ref", "role": "viewer"}, {"user": "invalid_user_ref"}),
        ({"user": "user:default/", "role": "viewer"}, {"user": "invalid_user_ref"}),
        ({"user": "ghost", "role": "viewer"}, {"user": "unknown_user"}),
        ({"user": "user:default/newcomer", "role": "viewer", "team": "beta"}, {"team": "unknown_field"}),
    ],
)
def test_member_add_validation_names_each_field(
    matrix: RoleMatrix, body: dict[str, object], expected: dict[str, str]
) -> None:
    client = matrix.client("admin")
    before = tenancy_state()
    problem = assert_problem(client.post("/api/v1/teams/alpha/members", body, format="json"), 400, "validation_failed")
    assert field_entries(problem) == expected
    assert tenancy_state() == before


def test_a_service_principal_cannot_become_a_member(matrix: RoleMatrix) -> None:
    ServicePrincipalFactory(username="service:collector")
    client = matrix.client("admin")
    before = tenancy_state()
    problem = assert_problem(
        client.post("/api/v1/teams/alpha/members", {"user": "service:collector", "role": "viewer"}, format="json"), 400
    )
    assert field_entries(problem) == {"user": "not_a_person"}
    assert tenancy_state() == before


def test_adding_an_existing_member_is_a_conflict(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    before = tenancy_state()
    response = client.post(
        "/api/v1/teams/alpha/members", {"user": "user:default/viewer", "role": "admin"}, format="json"
    )
    assert_problem(response, 409, "already_member")
    assert tenancy_state() == before


# --- /teams/{team}/members/{user_ref} ---------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_member_role_change_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    response = client.patch("/api/v1/teams/alpha/members/user:default/viewer", {"role": "developer"}, format="json")
    expected = TEAM_ADMIN_WRITE[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES.get(expected, "insufficient_role"))
        assert tenancy_state() == before
        return
    assert response.status_code == 200, response.content
    assert (response.json()["user"], response.json()["role"]) == ("user:default/viewer", "developer")
    membership = Membership.objects.get(team=matrix.team, user=matrix.viewer)
    assert membership.role == Role.DEVELOPER
    [event] = audit_events("membership.change_role")
    assert (event.actor_id, event.target_id, event.team_slug) == (getattr(matrix, who).pk, str(membership.pk), "alpha")
    assert (event.before, event.after) == (
        {"user": "user:default/viewer", "role": "viewer"},
        {"user": "user:default/viewer", "role": "developer"},
    )


def test_member_role_change_validation_and_unknown_member(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    before = tenancy_state()
    for body, expected in (
        ({"role": "owner"}, {"role": "invalid_choice"}),
        ({}, {"role": "required"}),
        ({"role": "viewer", "team": "beta"}, {"team": "unknown_field"}),
    ):
        problem = assert_problem(
            client.patch("/api/v1/teams/alpha/members/user:default/developer", body, format="json"), 400
        )
        assert field_entries(problem) == expected
    missing = client.patch("/api/v1/teams/alpha/members/user:default/nobody", {"role": "viewer"}, format="json")
    assert_problem(missing, 404, "member_not_found")
    assert tenancy_state() == before


def test_member_role_change_to_the_same_role_records_nothing(matrix: RoleMatrix) -> None:
    response = matrix.client("admin").patch(
        "/api/v1/teams/alpha/members/user:default/admin", {"role": "admin"}, format="json"
    )
    assert response.status_code == 200
    assert audit_events("membership.change_role") == []


@pytest.mark.parametrize("who", ["admin", "platform_admin"])
def test_the_last_admin_can_be_neither_demoted_nor_removed(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    demote = client.patch("/api/v1/teams/alpha/members/user:default/admin", {"role": "developer"}, format="json")
    problem = assert_problem(demote, 409, "last_admin")
    assert "last admin" in problem["detail"]
    assert_problem(client.delete("/api/v1/teams/alpha/members/user:default/admin"), 409, "last_admin")
    assert tenancy_state() == before


def test_with_two_admins_one_may_step_down_and_the_other_then_stays(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    client.patch("/api/v1/teams/alpha/members/user:default/developer", {"role": "admin"}, format="json")
    stepped_down = client.patch("/api/v1/teams/alpha/members/user:default/admin", {"role": "viewer"}, format="json")
    assert stepped_down.status_code == 200, stepped_down.content
    successor = matrix.client("developer")
    assert_problem(
        successor.patch("/api/v1/teams/alpha/members/user:default/developer", {"role": "viewer"}, format="json"),
        409,
        "last_admin",
    )
    assert_problem(successor.delete("/api/v1/teams/alpha/members/user:default/developer"), 409, "last_admin")
    assert list(Membership.objects.filter(team=matrix.team, role=Role.ADMIN).values_list("user", flat=True)) == [
        matrix.developer.pk
    ]


@pytest.mark.django_db(transaction=True)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(matrix: RoleMatrix) -> None:
    Membership.objects.filter(team=matrix.team, user=matrix.developer).update(role=Role.ADMIN)
    requests = [
        (client_with_token(matrix.admin), "user:default/developer"),
        (client_with_token(matrix.developer), "user:default/admin"),
    ]
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []

    def demote(client: APIClient, target: str) -> None:
        try:
            barrier.wait()
            statuses.append(
                client.patch(f"/api/v1/teams/alpha/members/{target}", {"role": "viewer"}, format="json").status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One demotion wins. The other is refused: 409 when both passed the permission check at once (the last
    # admin would go), 403 when the winner had already demoted its author to viewer before it was checked.
    first, second = sorted(statuses)
    assert first == 200
    assert second in (403, 409)
    assert Membership.objects.filter(team=matrix.team, role=Role.ADMIN).count() == 1


@pytest.mark.parametrize("who", ROLES)
def test_member_remove_matrix(matrix: RoleMatrix, who: str) -> None:
    client = matrix.client(who)
    before = tenancy_state()
    membership_id = Membership.objects.get(team=matrix.team, user=matrix.developer).pk
    response = client.delete("/api/v1/teams/alpha/members/user:default/developer")
    expected = {**TEAM_ADMIN_WRITE, "admin": 204, "platform_admin": 204}[who]
    if expected != 204:
        assert_problem(response, expected, REFUSAL_CODES.get(expected, "insufficient_role"))
        assert tenancy_state() == before
        return
    assert response.status_code == 204
    assert response.content == b""
    assert not Membership.objects.filter(team=matrix.team, user=matrix.developer).exists()
    assert User.objects.filter(pk=matrix.developer.pk).exists()  # leaving a team keeps the person
    [event] = audit_events("membership.remove")
    assert (event.actor_id, event.target_id, event.team_slug, event.after) == (
        getattr(matrix, who).pk,
        str(membership_id),
        "alpha",
        None,
    )
    assert event.before == {"user": "user:default/developer", "role": "developer"}


def test_removing_a_non_member_is_404_and_an_admin_may_leave_when_another_remains(matrix: RoleMatrix) -> None:
    client = matrix.client("admin")
    assert_problem(client.delete("/api/v1/teams/alpha/members/user:default/outsider"), 404, "member_not_found")
    Membership.objects.filter(team=matrix.team, user=matrix.developer).update(role=Role.ADMIN)
    assert client.delete("/api/v1/teams/alpha/members/user:default/admin").status_code == 204
    assert list(Membership.objects.filter(team=matrix.team).values_list("user", "role").order_by("user")) == sorted(
        [(matrix.developer.pk, "admin"), (matrix.viewer.pk, "viewer")]
    )
    # The former admin no longer sees the team.
    assert_problem(client.get("/api/v1/teams/alpha"), 404, "team_not_found")


def test_the_membership_audit_trail_follows_one_target_id(matrix: RoleMatrix) -> None:
    creator = matrix.client("developer")
    creator.post("/api/v1/teams", {"slug": "gamma", "display_name": "Gamma"}, format="json")
    creator.post("/api/v1/teams/gamma/members", {"user": "user:default/viewer", "role": "admin"}, format="json")
    creator.patch("/api/v1/teams/gamma/members/user:default/developer", {"role": "viewer"}, format="json")
    membership = Membership.objects.get(team__slug="gamma", user=matrix.developer)
    history = AuditEvent.objects.filter(target_type="membership", target_id=str(membership.pk)).order_by("id")
    assert [event.action for event in history] == ["membership.add", "membership.change_role"]


# --- /teams/{team}/quota -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_quota_read_matrix(matrix: RoleMatrix, who: str, settings: Any) -> None:
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-l4", gpus=4)
    TeamGpuQuota.objects.create(quota=matrix.team.quota, accelerator_type="nvidia-h100-80gb", gpus=1)
    response = matrix.client(who).get("/api/v1/teams/alpha/quota")
    expected = MEMBER_READ[who]
    if expected != 200:
        assert_problem(response, expected, REFUSAL_CODES[expected])
        return
    body = response.json()
    assert set(body) == QUOTA_FIELDS | LLMD_AND_KUEUE_QUOTA_FIELDS
    assert (body["serving_tier"], body["gpu_borrowing_limits"]) == ("standard", {})
    defaults = settings.QUOTA_DEFAULTS
    assert {key: body[key] for key in QUOTA_FIELDS - {"updated_at"}} == {
        "team": "alpha",
        "gpus": {"nvidia-h100-80gb": 1, "nvidia-l4": 4},
        "max_deployments": defaults["max_deployments"],
        "tokens_per_minute": defaults["tokens_per_minute"],
        "tokens_per_day": defaults["tokens_per_day"],
        "monthly_budget": f"{Decimal(defaults['monthly_budget']):.2f}",
        "budget_policy": defaults["budget_policy"],
    }
    assert list(body["gpus"]) == ["nvidia-h100-80gb", "nvidia-l4"]


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("who", ROLES)
def test_quota_write_matrix(matrix: RoleMatrix, who: str, method: str) -> None:
    client = matrix.client(who)
    body = {
        "gpus": {"nvidia-l4": 6},
        "max_deployments": 7,
        "tokens_per_minute": 500,
        "tokens_per_day": 60000,
        "monthly_budget": "99.95",
        "budget_policy": "block",
        "serving_tier": "production",
        "gpu_borrowing_limits": {"nvidia-l4": 2},
    }
    before = tenancy_state()
    response = getattr(client, method)("/api/v1/teams/alpha/quota", body, format="json")
    expected = PLATFORM_ADMIN_WRITE[who]
    if expected != 200:
        code = {403: "platform_admin_required"}.get(expected) or REFUSAL_CODES[expected]
        assert_problem(response, expected, code)
        assert tenancy_state() == before
        return
    assert response.status_code == 200, response.content
    answered = response.json()
    assert {key: answered[key] for key in body} == body
    quota = TeamQuota.objects.get(team=matrix.team)
    assert (quota.max_deployments, quota.tokens_per_minute, quota.tokens_per_day) == (7, 500, 60000)
    assert (quota.monthly_budget, quota.budget_policy) == (Decimal("99.95"), "block")
    assert list(quota.gpu_limits.values_list("accelerator_type", "gpus", "borrowing_limit")) == [("nvidia-l4", 6, 2)]
    assert quota.serving_tier == "production"
    [event] = audit_events("team_quota.update")
    assert (event.actor_id, event.target_type, event.target_id, event.team_slug) == (
        matrix.platform_admin.pk,
        "team_quota",
        str(quota.pk),
        "alpha",
    )
    assert event.after == {**body, "monthly_budget": "99.95"}
    assert event.before["gpus"] == {}
    assert event.before["budget_policy"] != "block"


def test_quota_patch_changes_only_what_it_names_and_gpus_replace_the_whole_map(matrix: RoleMatrix) -> None:
    quota = matrix.team.quota
    TeamGpuQuota.objects.create(quota=quota, accelerator_type="nvidia-l4", gpus=4)
    TeamGpuQuota.objects.create(quota=quota, accelerator_type="nvidia-a100-40gb", gpus=2)
    client = matrix.client("platform_admin")
    before = client.get("/api/v1/teams/alpha/quota").json()
    response = client.patch(
        "/api/v1/teams/alpha/quota", {"gpus": {"nvidia-l4": 8, "nvidia-h100-80gb": 1}}, format="json"
    )
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["gpus"] == {"nvidia-h100-80gb": 1, "nvidia-l4": 8}
    for key in ("max_deployments", "tokens_per_minute", "tokens_per_day", "monthly_budget", "budget_policy"):
        assert after[key] == before[key]
    [event] = audit_events("team_quota.update")
    assert (event.before["gpus"], event.after["gpus"]) == (
        {"nvidia-a100-40gb": 2, "nvidia-l4": 4},
        {"nvidia-h100-80gb": 1, "nvidia-l4": 8},
    )
    budget_only = client.patch("/api/v1/teams/alpha/quota", {"monthly_budget": "10"}, format="json").json()
    assert (budget_only["monthly_budget"], budget_only["gpus"]) == ("10.00", {"nvidia-h100-80gb": 1, "nvidia-l4": 8})
    cleared = client.patch("/api/v1/teams/alpha/quota", {"gpus": {}}, format="json").json()
    assert cleared["gpus"] == {}
    assert not TeamGpuQuota.objects.filter(quota=quota).exists()


def test_quota_write_without_a_change_records_nothing(matrix: RoleMatrix) -> None:
    client = matrix.client("platform_admin")
    current = client.get("/api/v1/teams/alpha/quota").json()
    response = client.patch(
        "/api/v1/teams/alpha/quota",
        {"max_deployments": current["max_deployments"], "budget_policy": current["budget_policy"]},
        format="json",
    )
    assert response.status_code == 200
    assert audit_events("team_quota.update") == []


def test_quota_put_needs_every_field(matrix: RoleMatrix) -> None:
    client = matrix.client("platform_admin")
    before = tenancy_state()
    problem = assert_problem(client.put("/api/v1/teams/alpha/quota", {"max_deployments": 3}, format="json"), 400)
    assert field_entries(problem) == {
        "gpus": "required",
        "tokens_per_minute": "required",
        "tokens_per_day": "required",
        "monthly_budget": "required",
        "budget_policy": "required",
    }
    assert tenancy_state() == before


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_deployments": -1}, {"max_deployments": "min_value"}),
        ({"tokens_per_minute": -5}, {"tokens_per_minute": "min_value"}),
        ({"tokens_per_day": "lots"}, {"tokens_per_day": "invalid"}),
        ({"max_deployments": 1.5}, {"max_deployments": "invalid"}),
        ({"monthly_budget": "-5"}, {"monthly_budget": "min_value"}),
        ({"monthly_budget": "NaN"}, {"monthly_budget": "invalid"}),
        ({"monthly_budget": "1.234"}, {"monthly_budget": "max_decimal_places"}),
        ({"budget_policy": "explode"}, {"budget_policy": "invalid_choice"}),
        ({"gpus": {"nvidia-l4": -1}}, {"gpus.nvidia-l4": "min_value"}),
        ({"gpus": {"NVIDIA L4": 1}}, {"gpus.NVIDIA L4": "invalid"}),
        ({"gpus": ["nvidia-l4"]}, {"gpus": "not_a_dict"}),
        ({"gpus": None}, {"gpus": "null"}),
        ({"max_deploymnets": 9}, {"max_deploymnets": "unknown_field"}),
        (
            {"max_deployments": -1, "budget_policy": "x"},
            {"max_deployments": "min_value", "budget_policy": "invalid_choice"},
        ),
    ],
)
def test_quota_validation_names_each_field_and_changes_nothing(
    matrix: RoleMatrix, body: dict[str, object], expected: dict[str, str]
) -> None:
    client = matrix.client("platform_admin")
    before = tenancy_state()
    problem = assert_problem(client.patch("/api/v1/teams/alpha/quota", body, format="json"), 400, "validation_failed")
    assert field_entries(problem) == expected
    assert tenancy_state() == before


def test_quota_refusal_comes_before_validation(matrix: RoleMatrix) -> None:
    response = matrix.client("admin").patch("/api/v1/teams/alpha/quota", {"max_deployments": -1}, format="json")
    assert_problem(response, 403, "platform_admin_required")
    assert_problem(matrix.client("outsider").put("/api/v1/teams/alpha/quota", {}, format="json"), 404, "team_not_found")


def test_an_admin_scoped_service_principal_writes_quotas(matrix: RoleMatrix) -> None:
    service = ServicePrincipalFactory(username="service:provisioner")
    client = client_with_token(service, scopes=["admin"])
    response = client.patch("/api/v1/teams/alpha/quota", {"gpus": {"nvidia-l4": 2}}, format="json")
    assert response.status_code == 200, response.content
    assert audit_events("team_quota.update")[0].actor_id == service.pk


def test_a_backstage_user_on_behalf_of_does_not_get_the_services_admin_scope(matrix: RoleMatrix) -> None:
    client = backstage_client(scopes=["backstage", "admin"])
    before = tenancy_state()
    response = client.patch(
        "/api/v1/teams/alpha/quota", {"max_deployments": 1}, format="json", HTTP_X_BACKSTAGE_USER="user:default/admin"
    )
    assert_problem(response, 403, "platform_admin_required")
    assert tenancy_state() == before


def test_other_users_do_not_see_a_team_they_left(matrix: RoleMatrix) -> None:
    # A membership, not a user attribute, is what opens a team.
    viewer = UserFactory(backstage_ref="user:default/leaver")
    MembershipFactory(team=matrix.team, user=viewer, role=Role.VIEWER)
    client = client_with_token(viewer)
    assert client.get("/api/v1/teams/alpha/quota").status_code == 200
    assert matrix.client("admin").delete("/api/v1/teams/alpha/members/user:default/leaver").status_code == 204
    assert_problem(client.get("/api/v1/teams/alpha/quota"), 404, "team_not_found")
