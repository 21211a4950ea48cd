"""Budgets: a team's month evaluated against its budget from the rollups, thresholds alerted once, the team's policy
applied at the gateway at 100 percent, early lifts and thresholds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from celery import current_app
from django.db import transaction

from portal.core.audit import audit_record
from portal.core.errors import Conflict, ValidationFailed
from portal.gateway import services as gateway_services
from portal.tenancy.models import Team, TeamQuota, User
from portal.usage import selectors
from portal.usage.models import BudgetAlert, BudgetState, Enforcement, TeamBudgetSettings
from portal.usage.partitions import month_start
from portal.usage.services.rollups import usage_rollups_compact

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
    month and threshold), and at 100 percent the team's policy applied through its gateway policy."""
    now = now or datetime.now(UTC)
    month = month_start(now)
    with transaction.atomic():
        quota = TeamQuota.objects.select_related("team").filter(team_id=team_id).first()
        if quota is None:
            return None
        team = quota.team
        token_cost, gpu_cost = selectors.team_month_spend(team_id=team_id, month=month)
        spend = token_cost + gpu_cost
        BudgetState.objects.get_or_create(team=team, month=month, defaults={"budget": quota.monthly_budget})
        state = BudgetState.objects.select_for_update().get(team=team, month=month)
        state.budget = quota.monthly_budget
        state.spend = spend
        state.projected_spend = selectors.projected_month_end(spend=spend, month=month, now=now)
        state.evaluated_at = now
        percent = spend * 100 / quota.monthly_budget if quota.monthly_budget > 0 else Decimal(0)
        policy = quota.budget_policy
        enforce = percent >= 100 and policy in (Enforcement.THROTTLE, Enforcement.BLOCK) and state.lifted_at is None
        action = ""
        if enforce and state.enforcement != policy:
            gateway_services.team_budget_enforcement_set(
                actor=None,
                team=team,
                enforcement=policy,
                reason=f"monthly budget spent ({percent:.1f}% of {quota.monthly_budget})",
            )
            before = state.enforcement
            state.enforcement, state.enforced_at, action = policy, now, policy
            audit_record(
                actor=None,
                action="budget.enforce",
                target_type="team",
                target_id=team.pk,
                target_label=team.slug,
                team_slug=team.slug,
                before={"enforcement": before},
                after={"enforcement": policy, "month": month.isoformat(), "spend": str(spend)},
            )
        elif not enforce and state.enforcement != Enforcement.NONE and state.lifted_at is None:
            # The budget was raised or the policy relaxed: spend is within it again.
            gateway_services.team_budget_enforcement_set(
                actor=None, team=team, enforcement=Enforcement.NONE, reason="spend within the budget again"
            )
            audit_record(
                actor=None,
                action="budget.release",
                target_type="team",
                target_id=team.pk,
                target_label=team.slug,
                team_slug=team.slug,
                before={"enforcement": state.enforcement},
                after={"enforcement": "none", "reason": "within budget"},
            )
            state.enforcement = Enforcement.NONE
        state.save()
        if quota.monthly_budget > 0:
            for threshold in selectors.team_thresholds(team=team):
                if percent < threshold:
                    continue
                alert, created = BudgetAlert.objects.get_or_create(
                    team=team,
                    month=month,
                    threshold=threshold,
                    defaults={
                        "spend": spend,
                        "budget": quota.monthly_budget,
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
            gateway_services.team_budget_enforcement_set(
                actor=None, team=state.team, enforcement=Enforcement.NONE, reason="a new budget month"
            )
            audit_record(
                actor=None,
                action="budget.release",
                target_type="team",
                target_id=state.team.pk,
                target_label=state.team.slug,
                team_slug=state.team.slug,
                before={"enforcement": state.enforcement, "month": state.month.isoformat()},
                after={"enforcement": "none", "reason": "new month"},
            )
            state.released_at = now
            state.save(update_fields=["released_at", "updated_at"])
    team_ids = selectors.team_ids_with_budgets(month=month_start(now))
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
        if state is None or state.enforcement == Enforcement.NONE:
            raise Conflict(
                f"Team '{team.slug}' has no budget enforcement to lift this month", code="budget_not_enforced"
            )
        gateway_services.team_budget_enforcement_set(
            actor=actor, team=team, enforcement=Enforcement.NONE, reason=f"lifted: {reason}"
        )
        before = {"enforcement": state.enforcement}
        state.enforcement = Enforcement.NONE
        state.lifted_at, state.lifted_by, state.lift_reason = now, actor, reason
        state.save()
        audit_record(
            actor=actor,
            action="budget.lift",
            target_type="team",
            target_id=team.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before=before,
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
