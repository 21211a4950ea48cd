"""Cost reports from rollups: team-scoped and platform-wide, by day, model or credential, JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from portal.gateway import services as gateway_services
from tests.conftest import ROLES, assert_problem
from tests.portal.usage.conftest import UsageWorld, expected_cost, recent

pytestmark = pytest.mark.django_db


@pytest.fixture
def spent(world: UsageWorld, rollups) -> UsageWorld:
    second = gateway_services.credential_issue(actor=None, team=world.team, name="second")
    world.post(
        [
            world.event(at=recent(), input_tokens=1000, output_tokens=100),
            world.event(at=recent(), input_tokens=2000, output_tokens=0, client_id=second.client_id),
            world.event(at=recent(), input_tokens=10, output_tokens=10, client_id=world.other_client_id),
        ]
    )
    rollups()
    world.second_client_id = second.client_id  # type: ignore[attr-defined]
    return world


def _range() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()}


def test_team_report_by_day_model_and_credential(spent: UsageWorld) -> None:
    client = spent.matrix.client("viewer")
    team_cost = expected_cost(input_tokens=1000, output_tokens=100) + expected_cost(input_tokens=2000, output_tokens=0)
    by_day = client.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "day"}).json()
    assert by_day["team"] == "alpha"
    assert by_day["currency"] == "USD"
    assert by_day["totals"]["requests"] == 2
    assert Decimal(by_day["totals"]["token_cost"]) == team_cost
    assert Decimal(by_day["totals"]["total_cost"]) == team_cost
    assert sum(Decimal(row["token_cost"]) for row in by_day["series"]) == team_cost
    by_model = client.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "model"}).json()
    assert [(row["model"], row["requests"]) for row in by_model["series"]] == [("gpt-test", 2)]
    by_credential = client.get("/api/v1/teams/alpha/costs", {**_range(), "group_by": "credential"}).json()
    assert sorted((row["client_id"], row["input_tokens"]) for row in by_credential["series"]) == sorted(
        [(spent.client_id, 1000), (spent.second_client_id, 2000)]  # type: ignore[attr-defined]
    )


def test_team_report_as_csv(spent: UsageWorld) -> None:
    response = spent.matrix.client("admin").get(
        "/api/v1/teams/alpha/costs", {**_range(), "group_by": "model", "format": "csv"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert rows[0]["model"] == "gpt-test"
    assert rows[0]["requests"] == "2"
    assert Decimal(rows[0]["token_cost"]) == expected_cost(input_tokens=3000, output_tokens=100)
    accept = spent.matrix.client("admin").get("/api/v1/teams/alpha/costs", _range(), HTTP_ACCEPT="text/csv")
    assert accept.content.decode().splitlines()[0].startswith("day,requests,")


def test_platform_report_covers_every_team_and_filters(spent: UsageWorld) -> None:
    client = spent.matrix.client("platform_admin")
    by_team = client.get("/api/v1/costs", {**_range(), "group_by": "team"}).json()
    assert sorted((row["team"], row["requests"]) for row in by_team["series"]) == [("alpha", 2), ("beta", 1)]
    only_beta = client.get("/api/v1/costs", {**_range(), "team": "beta"}).json()
    assert only_beta["totals"]["requests"] == 1
    assert Decimal(only_beta["totals"]["token_cost"]) == expected_cost(input_tokens=10, output_tokens=10)
    assert_problem(client.get("/api/v1/costs", {"team": "nope"}), 404, "team_not_found")


def test_a_team_reads_only_its_own_costs(spent: UsageWorld) -> None:
    outsider = spent.matrix.client("outsider")  # admin of beta
    assert_problem(outsider.get("/api/v1/teams/alpha/costs"), 404, "team_not_found")
    beta = outsider.get("/api/v1/teams/beta/costs", _range()).json()
    assert beta["totals"]["requests"] == 1
    assert_problem(outsider.get("/api/v1/costs"), 403)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"to": "soon"}, "to"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "to"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),
        ({"group_by": "team"}, "group_by"),
        ({"group_by": "hour"}, "group_by"),
    ],
)
def test_bad_report_parameters_name_the_field(spent: UsageWorld, params, field) -> None:
    problem = assert_problem(spent.matrix.client("viewer").get("/api/v1/teams/alpha/costs", params), 400)
    assert [entry["field"] for entry in problem["errors"]] == [field]


@pytest.mark.parametrize("who", ROLES)
def test_team_costs_matrix(spent: UsageWorld, who: str) -> None:
    response = spent.matrix.client(who).get("/api/v1/teams/alpha/costs", _range())
    expected = {"anonymous": 401, "outsider": 404}.get(who, 200)
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["totals"]["requests"] == 2


@pytest.mark.parametrize("who", ROLES)
def test_platform_costs_matrix(spent: UsageWorld, who: str) -> None:
    response = spent.matrix.client(who).get("/api/v1/costs", _range())
    expected = {"anonymous": 401, "platform_admin": 200}.get(who, 403)
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["totals"]["requests"] == 3


@pytest.mark.parametrize("who", ROLES)
def test_quarantine_list_matrix(spent: UsageWorld, who: str) -> None:
    response = spent.matrix.client(who).get("/api/v1/usage/quarantine")
    assert response.status_code == {"anonymous": 401, "platform_admin": 200}.get(who, 403)
