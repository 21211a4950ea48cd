"""Budgets: thresholds alert once per month, the policy at 100 percent changes the team's gateway policy, the
next month lifts it, a platform admin may lift it early; alerts reach a Slack-compatible webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from portal.core.models import AuditEvent
from portal.gateway.models import TeamGatewayPolicy
from portal.tenancy.models import TeamQuota
from portal.usage import services
from portal.usage.models import BudgetAlert, BudgetState
from portal.usage.partitions import month_start, next_month
from tests.conftest import ROLES, assert_problem
from tests.factories import TeamFactory
from tests.portal.usage.conftest import UsageWorld

pytestmark = pytest.mark.django_db


def _spend(world: UsageWorld, rollups, dollars: int) -> None:
    """Each million input tokens costs 2.50 at the test prices."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    if at.month != datetime.now(UTC).month:  # the first minutes of a month: stay inside it
        at = datetime.now(UTC).replace(microsecond=0)
    world.post([world.event(at=at, input_tokens=400_000, output_tokens=0) for _ in range(dollars)])
    rollups()


def _budget(world: UsageWorld, amount: str, policy: str) -> None:
    TeamQuota.objects.filter(team=world.team).update(monthly_budget=Decimal(amount), budget_policy=policy)


def _gateway_enforcement(world: UsageWorld) -> str:
    policy = TeamGatewayPolicy.objects.filter(team=world.team).first()
    return policy.budget_enforcement if policy is not None else "none"


def test_thresholds_alert_once_and_block_changes_the_gateway_policy(world: UsageWorld, rollups) -> None:
    _budget(world, "10.00", "block")
    _spend(world, rollups, 6)
    services.budgets_evaluate()
    services.budgets_evaluate()
    assert list(BudgetAlert.objects.values_list("threshold", flat=True)) == [50]
    assert _gateway_enforcement(world) == "none"
    _spend(world, rollups, 3)
    services.budgets_evaluate()
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80]
    _spend(world, rollups, 2)
    services.budgets_evaluate()
    services.budgets_evaluate()
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]
    assert BudgetAlert.objects.get(threshold=100).action == "block"
    assert BudgetAlert.objects.get(threshold=100).spend == Decimal("11")
    assert _gateway_enforcement(world) == "block"
    state = BudgetState.objects.get(team=world.team)
    assert (state.enforced_at is not None, state.spend) == (True, Decimal("11"))
    assert state.projected_spend >= Decimal("11")
    assert AuditEvent.objects.filter(action="budget.enforce", team_slug="alpha").count() == 1


def test_alert_only_policy_never_touches_the_gateway(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "alert")
    _spend(world, rollups, 2)
    services.budgets_evaluate()
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]
    assert _gateway_enforcement(world) == "none"
    assert BudgetState.objects.get(team=world.team).enforced_at is None


def test_throttle_policy_and_the_next_month_lifts_it(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "throttle")
    _spend(world, rollups, 1)
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "throttle"
    next_start = next_month(month_start(datetime.now(UTC)))
    services.budgets_evaluate(now=datetime(next_start.year, next_start.month, 1, 0, 5, tzinfo=UTC))
    assert _gateway_enforcement(world) == "none"
    old = BudgetState.objects.get(team=world.team, month=month_start(datetime.now(UTC)))
    assert old.released_at is not None
    new = BudgetState.objects.get(team=world.team, month=next_start)
    assert (new.enforced_at, new.spend) == (None, Decimal("0"))


def test_raising_the_budget_releases_enforcement(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "block")
    _spend(world, rollups, 1)
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "block"
    _budget(world, "100.00", "block")
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "none"


def test_platform_admin_lifts_early_and_it_holds_for_the_month(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "block")
    _spend(world, rollups, 2)
    services.budgets_evaluate()
    response = world.matrix.client("platform_admin").post(
        "/api/v1/teams/alpha/budget/lift", {"reason": "quarter-end launch"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["enforcement"] == "none"
    assert response.json()["lifted_at"] is not None
    assert _gateway_enforcement(world) == "none"
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "none"
    audit = AuditEvent.objects.get(action="budget.lift")
    assert (audit.actor, audit.after["reason"]) == (world.matrix.platform_admin, "quarter-end launch")
    again = world.matrix.client("platform_admin").post(
        "/api/v1/teams/alpha/budget/lift", {"reason": "x"}, format="json"
    )
    assert_problem(again, 409, "budget_not_enforced")


def test_lift_needs_a_reason(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "block")
    _spend(world, rollups, 2)
    services.budgets_evaluate()
    problem = assert_problem(
        world.matrix.client("platform_admin").post("/api/v1/teams/alpha/budget/lift", {}, format="json"), 400
    )
    assert [entry["field"] for entry in problem["errors"]] == ["reason"]
    assert _gateway_enforcement(world) == "block"


@pytest.mark.parametrize("who", ROLES)
def test_lift_matrix(world: UsageWorld, rollups, who: str) -> None:
    _budget(world, "1.00", "block")
    _spend(world, rollups, 2)
    services.budgets_evaluate()
    response = world.matrix.client(who).post("/api/v1/teams/alpha/budget/lift", {"reason": "ok"}, format="json")
    expected = {"anonymous": 401, "platform_admin": 200}.get(who, 403)
    assert response.status_code == expected
    assert _gateway_enforcement(world) == ("none" if expected == 200 else "block")


@pytest.mark.parametrize("who", ROLES)
def test_budget_read_matrix(world: UsageWorld, rollups, who: str) -> None:
    _budget(world, "10.00", "alert")
    _spend(world, rollups, 6)
    response = world.matrix.client(who).get("/api/v1/teams/alpha/budget")
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403, "developer": 403}.get(who, 200)
    assert response.status_code == expected
    if expected == 200:
        body = response.json()
        assert (body["budget"], body["spend"], body["percent"]) == ("10.00", "6.00", "60.00")
        assert body["thresholds"] == [50, 80, 100]
        assert body["policy"] == "alert"


def test_team_admin_sets_thresholds(world: UsageWorld, rollups) -> None:
    _budget(world, "10.00", "alert")
    client = world.matrix.client("admin")
    response = client.patch("/api/v1/teams/alpha/budget", {"thresholds": [90, 25]}, format="json")
    assert response.status_code == 200
    assert response.json()["thresholds"] == [25, 90]
    _spend(world, rollups, 3)
    services.budgets_evaluate()
    assert list(BudgetAlert.objects.values_list("threshold", flat=True)) == [25]
    assert AuditEvent.objects.filter(action="budget.thresholds", team_slug="alpha").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": [0]}, "thresholds.0"),
        ({"thresholds": [50, 2000]}, "thresholds.1"),
        ({"thresholds": "50"}, "thresholds"),
        ({"thresholds": [50], "budget": 5}, "budget"),
    ],
)
def test_bad_thresholds_name_the_field_and_change_nothing(world: UsageWorld, body, field) -> None:
    problem = assert_problem(world.matrix.client("admin").patch("/api/v1/teams/alpha/budget", body, format="json"), 400)
    assert field in [entry["field"] for entry in problem["errors"]]
    assert not AuditEvent.objects.filter(action="budget.thresholds").exists()


@pytest.mark.parametrize("who", ROLES)
def test_threshold_write_matrix(world: UsageWorld, who: str) -> None:
    response = world.matrix.client(who).patch("/api/v1/teams/alpha/budget", {"thresholds": [70]}, format="json")
    assert response.status_code == {"anonymous": 401, "outsider": 404, "viewer": 403, "developer": 403}.get(who, 200)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(settings) -> Iterator[type[_Hook]]:
    _Hook.received = []
    _Hook.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    # shutdown() waits for the serving loop's next poll: 0.5 s per test at the default interval
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    settings.USAGE_BUDGET_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hooks/budget"
    yield _Hook
    server.shutdown()


def test_alert_is_delivered_to_the_webhook_once(world: UsageWorld, rollups, webhook) -> None:
    _budget(world, "4.00", "block")
    _spend(world, rollups, 5)
    services.budgets_evaluate()
    for alert_id in services.alert_ids_pending():
        assert services.budget_alert_deliver(alert_id=alert_id)
    assert services.alert_ids_pending() == []
    assert sorted(message["threshold"] for message in webhook.received) == [50, 80, 100]
    blocked = next(message for message in webhook.received if message["threshold"] == 100)
    assert blocked["team"] == "alpha"
    assert blocked["action"] == "block"
    assert "Team alpha has spent 5.00 USD of its 4.00 USD budget" in blocked["text"]
    assert all(alert.delivered_at is not None for alert in BudgetAlert.objects.all())


def test_failed_delivery_is_recorded_and_retried(world: UsageWorld, rollups, webhook) -> None:
    webhook.status = 500
    _budget(world, "4.00", "alert")
    _spend(world, rollups, 3)
    services.budgets_evaluate()
    (alert_id,) = services.alert_ids_pending()
    assert not services.budget_alert_deliver(alert_id=alert_id)
    alert = BudgetAlert.objects.get(pk=alert_id)
    assert (alert.delivered_at, alert.delivery_attempts) == (None, 1)
    assert "500" in alert.last_delivery_error
    with pytest.raises(services.AlertNotDelivered):
        services.raise_if_alert_undelivered(alert_id=alert_id)
    webhook.status = 200
    assert services.budget_alert_deliver(alert_id=alert_id)
    assert services.alert_ids_pending() == []


def test_a_budget_set_to_zero_releases_enforcement(world: UsageWorld, rollups) -> None:
    _budget(world, "1.00", "block")
    _spend(world, rollups, 1)
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "block"
    _budget(world, "0.00", "block")
    services.budgets_evaluate()
    assert _gateway_enforcement(world) == "none"
    assert world.matrix.client("platform_admin").get("/api/v1/teams/alpha/budget").json()["enforcement"] == "none"


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_the_migration_carries_enforcement_held_by_budget_states_to_the_gateway(world: UsageWorld) -> None:
    """usage 0012, run for real: a state still enforcing hands its enforcement to the team's gateway policy (the row
    drifted, or is missing); a lifted state hands nothing; backwards, the states take it back from the gateway."""
    drifted, missing, lifted = world.team, TeamFactory(slug="beta-team"), TeamFactory(slug="gamma-team")
    TeamGatewayPolicy.objects.create(team=drifted, budget_enforcement="none", generation=3)
    this_month = month_start(datetime.now(UTC))
    enforced_at = datetime.now(UTC) - timedelta(hours=1)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction: check its foreign keys before DDL
    state = _migrate([("usage", "0012_collector_source_token_in_tokens_app")]).get_model("usage", "BudgetState")
    for team, enforcement, lifted_at in (
        (drifted, "block", None),
        (missing, "throttle", None),
        (lifted, "block", enforced_at),
    ):
        state.objects.create(
            team_id=team.pk,
            month=this_month,
            budget=1,
            enforcement=enforcement,
            enforced_at=enforced_at,
            lifted_at=lifted_at,
        )

    _migrate([("usage", "0013_budget_enforcement_held_by_the_gateway")])

    assert sorted(TeamGatewayPolicy.objects.values_list("team__slug", "budget_enforcement", "generation")) == [
        ("alpha", "block", 4),
        ("beta-team", "throttle", 2),
    ]
    assert TeamGatewayPolicy.objects.get(team=drifted).reason == "carried over from the month's budget state"
    assert set(BudgetState.objects.values_list("enforced_at", flat=True)) == {enforced_at}

    TeamGatewayPolicy.objects.filter(team=missing).update(budget_enforcement="block")
    state = _migrate([("usage", "0012_collector_source_token_in_tokens_app")]).get_model("usage", "BudgetState")
    assert sorted(state.objects.values_list("team_id", "enforcement")) == sorted(
        [(drifted.pk, "block"), (missing.pk, "block"), (lifted.pk, "none")]
    )
    _migrate([("usage", "0013_budget_enforcement_held_by_the_gateway")])
