"""The usage Celery tasks are thin doors: run directly, they do the work of their services."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.tenancy.models import TeamQuota
from portal.usage.models import BudgetAlert, UsageDaily
from tests.portal.usage.conftest import UsageWorld
from workers.schedule import BEAT_SCHEDULE
from workers.tasks import usage as usage_tasks

pytestmark = pytest.mark.django_db


def test_beat_runs_every_usage_task_by_name() -> None:
    names = {entry["task"] for entry in BEAT_SCHEDULE.values()}
    assert {
        "usage.partitions_ensure",
        "usage.rollups_recompute",
        "usage.budgets_evaluate",
        "usage.gpu_accrue",
        "usage.deliver_pending_alerts",
        "usage.rerate_backdated_prices",
        "usage.partitions_drop_old",
    } <= names
    for name in names & {"usage.partitions_ensure", "usage.rollups_recompute", "usage.budgets_evaluate"}:
        assert name in {
            task.name
            for task in (usage_tasks.partitions_ensure, usage_tasks.rollups_recompute, usage_tasks.budgets_evaluate)
        }


def test_tasks_roll_up_and_evaluate_budgets(world: UsageWorld) -> None:
    TeamQuota.objects.filter(team=world.team).update(monthly_budget=Decimal("1.00"), budget_policy="alert")
    world.post([world.event(input_tokens=400_000, output_tokens=0)])
    assert usage_tasks.budgets_evaluate() >= 1  # recomputes rollups first
    assert UsageDaily.objects.get(team_id=world.team.pk).cost == Decimal("1")
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]
    assert usage_tasks.rollups_recompute() == 0
    assert usage_tasks.deliver_pending_alerts() == 0  # no webhook configured: alerts are only recorded
    assert usage_tasks.gpu_accrue() == 0
    assert isinstance(usage_tasks.partitions_ensure(), list)
