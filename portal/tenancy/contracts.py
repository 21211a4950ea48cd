"""What tenancy hands to other apps and to workers: frozen, Django-free values."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


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
