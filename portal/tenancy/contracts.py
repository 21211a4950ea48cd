"""What tenancy hands to other apps and to workers: frozen, Django-free values."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

# A team's serving tier (a quota field a platform admin sets) and the priority it gives the InferenceObjective of
# each of the team's llm-d deployments: higher is served first, and a request naming no objective gets 0
# (llm-d-router v0.10.0 pkg/epp/requestcontrol/director.go getInferenceObjective), so "standard" is that default.
PRODUCTION_TIER = "production"
STANDARD_TIER = "standard"
BATCH_TIER = "batch"
SERVING_TIER_PRIORITIES = {PRODUCTION_TIER: 100, STANDARD_TIER: 0, BATCH_TIER: -100}
SERVING_TIERS = tuple(SERVING_TIER_PRIORITIES)


class BudgetEnforcement(StrEnum):
    """What the gateway does to a team's traffic because of its monthly budget: the one enumeration of it. A quota's
    budget policy names the one a spent budget brings; the gateway app holds the one that applies now."""

    NONE = "none"
    THROTTLE = "throttle"
    BLOCK = "block"


BUDGET_ENFORCEMENT_CHOICES = [(enforcement.value, enforcement.name.capitalize()) for enforcement in BudgetEnforcement]
# The budget policy that only alerts (TeamQuota.BudgetPolicy.ALERT); the others are named after their enforcement.
ALERT_ONLY = "alert"


def enforcement_when_spent(budget_policy: str) -> BudgetEnforcement:
    """The enforcement a budget policy brings once the month's budget is spent."""
    return BudgetEnforcement.NONE if budget_policy == ALERT_ONLY else BudgetEnforcement(budget_policy)


@dataclass(frozen=True)
class TeamBudgetTerms:
    """A team's monthly budget and what spending it brings, as its quota says."""

    team_id: int
    team_slug: str
    monthly_budget: Decimal
    budget_policy: str

    @property
    def enforcement_when_spent(self) -> BudgetEnforcement:
        return enforcement_when_spent(self.budget_policy)


@dataclass(frozen=True)
class TeamQuotaContract:
    team_slug: str
    team_active: bool
    max_deployments: int
    tokens_per_minute: int
    tokens_per_day: int
    monthly_budget: Decimal
    budget_policy: str
    gpus: dict[str, int]
    # Kueue only: GPUs per accelerator type the team may borrow from the cohort beyond its own (absent: none).
    gpu_borrowing_limits: dict[str, int] = field(default_factory=dict)
    serving_tier: str = STANDARD_TIER
