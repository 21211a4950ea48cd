"""What tenancy hands to other apps and to workers: frozen, Django-free values."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

# A team's serving tier (a quota field a platform admin sets) and the priority it gives the InferenceObjective of
# each of the team's llm-d deployments: higher is served first, and a request naming no objective gets 0
# (llm-d-router v0.10.0 pkg/epp/requestcontrol/director.go getInferenceObjective), so "standard" is that default.
PRODUCTION_TIER = "production"
STANDARD_TIER = "standard"
BATCH_TIER = "batch"
SERVING_TIER_PRIORITIES = {PRODUCTION_TIER: 100, STANDARD_TIER: 0, BATCH_TIER: -100}
SERVING_TIERS = tuple(SERVING_TIER_PRIORITIES)


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
