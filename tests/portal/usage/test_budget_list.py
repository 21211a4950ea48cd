"""`GET /api/v1/budgets`: every team's budget this month for platform admins, highest burn first, JSON or CSV."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.tenancy.models import TeamQuota
from tests.conftest import ROLES, RoleMatrix

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("who", ROLES)
def test_the_matrix(matrix: RoleMatrix, who: str) -> None:
    expected = {"anonymous": 401, "platform_admin": 200}.get(who, 403)
    assert matrix.client(who).get("/api/v1/budgets").status_code == expected


def test_teams_with_a_budget_as_their_budget_api_says(matrix: RoleMatrix) -> None:
    TeamQuota.objects.filter(team=matrix.team).update(monthly_budget=Decimal("100.00"))
    TeamQuota.objects.filter(team=matrix.other_team).update(monthly_budget=Decimal("0"))
    client = matrix.client("platform_admin")
    body = client.get("/api/v1/budgets").json()
    assert (body["count"], [item["team"] for item in body["results"]]) == (1, ["alpha"])  # beta has no budget
    assert body["results"][0] == client.get("/api/v1/teams/alpha/budget").json()
