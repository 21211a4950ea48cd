"""Shared fixtures: API clients per role, the role matrix of a team, and cache isolation."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from portal.tenancy.models import Role, Team, User
from portal.tokens.services import api_token_issue
from tests.factories import MembershipFactory, TeamFactory, UserFactory


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_prefix() -> None:
    # Rate-limit counters of earlier runs (same token ids after the test database is recreated) must not leak in.
    settings.CACHES["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:8]}"


def client_with_token(user: User, *, scopes: list[str] | None = None) -> APIClient:
    issued = api_token_issue(actor=None, principal=user, name="test", scopes=scopes or [])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    client.token_plaintext = issued.plaintext  # type: ignore[attr-defined]
    return client


@pytest.fixture
def api_client_for() -> Callable[..., APIClient]:
    return client_with_token


@dataclass
class RoleMatrix:
    """One team with a member of each role, a member of another team, a platform admin, and nobody."""

    team: Team
    other_team: Team
    viewer: User
    developer: User
    admin: User
    outsider: User
    platform_admin: User

    def client(self, who: str) -> APIClient:
        if who == "anonymous":
            return APIClient()
        return client_with_token(getattr(self, who))


ROLES = ["anonymous", "outsider", "viewer", "developer", "admin", "platform_admin"]


@pytest.fixture
def matrix(db: None) -> RoleMatrix:
    team = TeamFactory(slug="alpha")
    other_team = TeamFactory(slug="beta")
    members = {}
    for role in (Role.VIEWER, Role.DEVELOPER, Role.ADMIN):
        members[role] = MembershipFactory(
            team=team, role=role, user=UserFactory(backstage_ref=f"user:default/{role}")
        ).user
    outsider = MembershipFactory(
        team=other_team, role=Role.ADMIN, user=UserFactory(backstage_ref="user:default/outsider")
    ).user
    platform_admin = UserFactory(username="platform-admin", backstage_ref=None, is_staff=True)
    return RoleMatrix(
        team=team,
        other_team=other_team,
        viewer=members[Role.VIEWER],
        developer=members[Role.DEVELOPER],
        admin=members[Role.ADMIN],
        outsider=outsider,
        platform_admin=platform_admin,
    )


def assert_problem(response: object, status: int, code: str | None = None) -> dict[str, object]:
    """The response is an RFC 9457 problem with this status (and code)."""
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])  # type: ignore[attr-defined]
    assert response["Content-Type"].startswith("application/problem+json")  # type: ignore[index]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    if code is not None:
        assert body["code"] == code, body
    return body  # type: ignore[no-any-return]
