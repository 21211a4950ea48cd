"""Budget enforcement has one record: the team's gateway policy (gateway.TeamGatewayPolicy.budget_enforcement).
A month's BudgetState keeps when its spend enforced, was lifted or released, and no longer its own copy of what is
enforced. An enforcement a state still holds (neither lifted nor released) is carried over to the gateway policy
first, where the two tables had drifted apart; reversed, each such state takes the gateway's value back."""

from django.db import migrations, models
from django.db.models import F

CARRIED_OVER_REASON = "carried over from the month's budget state"


def carry_enforcement_to_the_gateway(apps, schema_editor):
    BudgetState = apps.get_model("usage", "BudgetState")
    TeamGatewayPolicy = apps.get_model("gateway", "TeamGatewayPolicy")
    ClusterGatewayPolicy = apps.get_model("gateway", "ClusterGatewayPolicy")
    in_force = (
        BudgetState.objects.filter(released_at__isnull=True, lifted_at__isnull=True)
        .exclude(enforcement="none")
        .order_by("team_id", "month")
    )
    carried = {state.team_id: state for state in in_force}  # a team's latest month wins
    changed = False
    for team_id, state in carried.items():
        policy, _ = TeamGatewayPolicy.objects.get_or_create(team_id=team_id)
        if state.enforced_at is None:
            state.enforced_at = state.updated_at
            state.save(update_fields=["enforced_at"])
        if policy.budget_enforcement != state.enforcement:
            policy.budget_enforcement = state.enforcement
            policy.reason = CARRIED_OVER_REASON
            policy.generation = F("generation") + 1
            policy.save(update_fields=["budget_enforcement", "reason", "generation"])
            changed = True
    if changed:  # every cluster's gateway renders every team: re-render them all
        ClusterGatewayPolicy.objects.update(generation=F("generation") + 1)


def take_enforcement_back_from_the_gateway(apps, schema_editor):
    BudgetState = apps.get_model("usage", "BudgetState")
    TeamGatewayPolicy = apps.get_model("gateway", "TeamGatewayPolicy")
    applied = dict(
        TeamGatewayPolicy.objects.exclude(budget_enforcement="none").values_list("team_id", "budget_enforcement")
    )
    states = BudgetState.objects.filter(
        team_id__in=list(applied), released_at__isnull=True, lifted_at__isnull=True, enforced_at__isnull=False
    )
    for state in states:
        state.enforcement = applied[state.team_id]
        state.save(update_fields=["enforcement"])


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_english_labels"),
        ("usage", "0012_collector_source_token_in_tokens_app"),
    ]

    operations = [
        migrations.RunPython(carry_enforcement_to_the_gateway, take_enforcement_back_from_the_gateway),
        migrations.RemoveConstraint(model_name="budgetstate", name="budget_state_enforcement_known"),
        migrations.RemoveField(model_name="budgetstate", name="enforcement"),
    ]
