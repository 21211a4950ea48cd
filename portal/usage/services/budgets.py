"""Budgets: a team's month evaluated against its budget from the rollups, thresholds alerted once, the enforcement
the team's policy names applied at the gateway at 100 percent (the gateway's team policy is the one record of what
is enforced now), early lifts and thresholds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from celery import current_app
from django.db import transaction

from portal.core.audit import audit_record
from portal.core.errors import Conflict, ValidationFailed
from portal.gateway import selectors as gateway_selectors
from portal.gateway import services as gateway_services
from portal.tenancy import selectors as tenancy_selectors
from portal.tenancy.contracts import BudgetEnforcement
from portal.usage import selectors
from portal.usage.models import BudgetAlert, BudgetState, TeamBudgetSettings
from portal.usage.partitions import month_start
from portal.usage.services.rollups import usage_rollups_compact

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from portal.tenancy.models import Team, User

logger = logging.getLogger(__name__)

DELIVER_ALERT_TASK = "usage.deliver_budget_alert"


def _send_after_commit(task: str, object_id: int) -> None:
    def send() -> None:
        try:
            current_app.send_task(task, args=[object_id])
        except Exception as error:  # the alert row is the outbox: the periodic sweep delivers what was not sent
            logger.warning("could not enqueue %s for %s: %s", task, object_id, error)

    transaction.on_commit(send)


def budget_evaluate_team(*, team_id: int, now: datetime | None = None) -> BudgetState | None:
    """Spend of the team's current month against its budget: alerts for newly crossed thresholds (once per
    month and threshold), and at 100 percent the enforcement its policy names, applied at the gateway (which holds
    what is enforced now; this month's state records when)."""
    now = now or datetime.now(UTC)
    month = month_start(now)
    with transaction.atomic():
        terms = tenancy_selectors.team_budget_terms(team_id=team_id)
        if terms is None:
            return None
        team = tenancy_selectors.team_get(team_id=team_id)
        token_cost, gpu_cost = selectors.team_month_spend(team_id=team_id, month=month)
        spend = token_cost + gpu_cost
        BudgetState.objects.get_or_create(team_id=team_id, month=month, defaults={"budget": terms.monthly_budget})
        state = BudgetState.objects.select_for_update().get(team_id=team_id, month=month)
        state.budget = terms.monthly_budget
        state.spend = spend
        state.projected_spend = selectors.projected_month_end(spend=spend, month=month, now=now)
        state.evaluated_at = now
        percent = spend * 100 / terms.monthly_budget if terms.monthly_budget > 0 else Decimal(0)
        wanted = terms.enforcement_when_spent if percent >= 100 and state.lifted_at is None else BudgetEnforcement.NONE
        applied = gateway_selectors.team_budget_enforcement(team_id=team_id)
        action = ""
        if wanted != BudgetEnforcement.NONE and (applied != wanted or state.enforced_at is None):
            # Enforced now, or the policy changed; a month's first enforcement is recorded even when last month's
            # is still applied (the month's end releases that one).
            gateway_services.team_budget_enforcement_set(
                actor=None,
                team=team,
                enforcement=wanted,
                reason=f"monthly budget spent ({percent:.1f}% of {terms.monthly_budget})",
            )
            state.enforced_at, action = now, wanted.value
            audit_record(
                actor=None,
                action="budget.enforce",
                target_type="team",
                target_id=team_id,
                target_label=terms.team_slug,
                team_slug=terms.team_slug,
                before={"enforcement": applied.value},
                after={"enforcement": wanted.value, "month": month.isoformat(), "spend": str(spend)},
            )
        elif (
            wanted == BudgetEnforcement.NONE
            and applied != BudgetEnforcement.NONE
            and state.enforced_at is not None
            and state.lifted_at is None
        ):
            # The budget was raised or the policy relaxed: spend is within it again. (What this month did not
            # enforce, the month's end releases.)
            gateway_services.team_budget_enforcement_set(
                actor=None, team=team, enforcement=BudgetEnforcement.NONE, reason="spend within the budget again"
            )
            audit_record(
                actor=None,
                action="budget.release",
                target_type="team",
                target_id=team_id,
                target_label=terms.team_slug,
                team_slug=terms.team_slug,
                before={"enforcement": applied.value},
                after={"enforcement": "none", "reason": "within budget"},
            )
        state.save()
        if terms.monthly_budget > 0:
            for threshold in selectors.team_thresholds(team=team):
                if percent < threshold:
                    continue
                alert, created = BudgetAlert.objects.get_or_create(
                    team_id=team_id,
                    month=month,
                    threshold=threshold,
                    defaults={
                        "spend": spend,
                        "budget": terms.monthly_budget,
                        "projected_spend": state.projected_spend,
                        "action": action if threshold >= 100 else "",
                    },
                )
                if created:
                    _send_after_commit(DELIVER_ALERT_TASK, alert.pk)
    return state


def budgets_evaluate(*, now: datetime | None = None, recompute_rollups: bool = False) -> int:
    """Release last month's enforcement (a new month starts with a new budget), then evaluate every team; with
    recompute_rollups, first bring the rollups up to what just arrived."""
    if recompute_rollups:
        usage_rollups_compact()
    now = now or datetime.now(UTC)
    for state_id in list(selectors.budget_states_to_release(before=month_start(now)).values_list("pk", flat=True)):
        with transaction.atomic():
            state = BudgetState.objects.select_for_update().select_related("team").get(pk=state_id)
            if state.released_at is not None:
                continue
            applied = gateway_selectors.team_budget_enforcement(team_id=state.team_id)
            if applied != BudgetEnforcement.NONE:
                gateway_services.team_budget_enforcement_set(
                    actor=None, team=state.team, enforcement=BudgetEnforcement.NONE, reason="a new budget month"
                )
                audit_record(
                    actor=None,
                    action="budget.release",
                    target_type="team",
                    target_id=state.team_id,
                    target_label=state.team.slug,
                    team_slug=state.team.slug,
                    before={"enforcement": applied.value, "month": state.month.isoformat()},
                    after={"enforcement": "none", "reason": "new month"},
                )
            state.released_at = now
            state.save(update_fields=["released_at", "updated_at"])
    team_ids = selectors.team_ids_with_budgets()
    for team_id in team_ids:
        budget_evaluate_team(team_id=team_id, now=now)
    return len(team_ids)


def budget_lift(*, actor: User, team: Team, reason: str, now: datetime | None = None) -> BudgetState:
    """A platform admin lifts this month's enforcement early; it stays lifted until the month ends."""
    now = now or datetime.now(UTC)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed.for_field("reason", "say why the budget enforcement is lifted", code="required")
    if len(reason) > 500:
        raise ValidationFailed.for_field("reason", "must be at most 500 characters", code="max_length")
    with transaction.atomic():
        state = BudgetState.objects.select_for_update().filter(team=team, month=month_start(now)).first()
        applied = gateway_selectors.team_budget_enforcement(team_id=team.pk)
        if state is None or applied == BudgetEnforcement.NONE:
            raise Conflict(
                f"Team '{team.slug}' has no budget enforcement to lift this month", code="budget_not_enforced"
            )
        gateway_services.team_budget_enforcement_set(
            actor=actor, team=team, enforcement=BudgetEnforcement.NONE, reason=f"lifted: {reason}"
        )
        state.lifted_at, state.lifted_by, state.lift_reason = now, actor, reason
        state.save()
        audit_record(
            actor=actor,
            action="budget.lift",
            target_type="team",
            target_id=team.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before={"enforcement": applied.value},
            after={"enforcement": "none", "reason": reason, "month": state.month.isoformat()},
        )
    return state


def budget_thresholds_set(*, actor: User, team: Team, thresholds: list[int]) -> tuple[int, ...]:
    problems = []
    if not isinstance(thresholds, list) or not thresholds or len(thresholds) > 10:
        raise ValidationFailed.for_field("thresholds", "give 1 to 10 percentages", code="invalid")
    for index, value in enumerate(thresholds):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            problems.append(f"thresholds[{index}]")
    if problems:
        raise ValidationFailed.for_field(problems[0], "must be a whole percentage from 1 to 1000", code="invalid")
    if len(set(thresholds)) != len(thresholds):
        raise ValidationFailed.for_field("thresholds", "must not repeat a percentage", code="duplicate")
    ordered = sorted(thresholds)
    with transaction.atomic():
        before = selectors.team_thresholds(team=team)
        TeamBudgetSettings.objects.update_or_create(team=team, defaults={"thresholds": ordered})
        audit_record(
            actor=actor,
            action="budget.thresholds",
            target_type="team",
            target_id=team.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before={"thresholds": list(before)},
            after={"thresholds": ordered},
        )
    return tuple(ordered)
