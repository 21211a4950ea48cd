"""The one rule of a team's effective gateway limits: throttling, blocking by budget, and suspension."""

from __future__ import annotations

import pytest

from portal.gateway.selectors import EffectiveLimits, team_effective_limits
from portal.tenancy.contracts import BudgetEnforcement, enforcement_when_spent


@pytest.mark.parametrize(
    ("enforcement", "active", "expected"),
    [
        ("none", True, EffectiveLimits(1000, 50_000, throttled=False, blocked_reason="")),
        ("throttle", True, EffectiveLimits(100, 5_000, throttled=True, blocked_reason="")),
        ("block", True, EffectiveLimits(1000, 50_000, throttled=False, blocked_reason="budget")),
        # Suspension wins over the budget, and a throttled team that is suspended admits nothing either.
        ("block", False, EffectiveLimits(1000, 50_000, throttled=False, blocked_reason="suspended")),
        ("throttle", False, EffectiveLimits(100, 5_000, throttled=True, blocked_reason="suspended")),
    ],
)
def test_effective_limits(enforcement: str, active: bool, expected: EffectiveLimits) -> None:
    limits = team_effective_limits(
        tokens_per_minute=1000, tokens_per_day=50_000, enforcement=enforcement, team_active=active, throttle_percent=10
    )
    assert limits == expected
    admitted = (0, 0) if expected.blocked_reason else (expected.tokens_per_minute, expected.tokens_per_day)
    assert (limits.admitted_per_minute, limits.admitted_per_day) == admitted


def test_a_throttle_never_rounds_a_limit_down_to_nothing() -> None:
    limits = team_effective_limits(
        tokens_per_minute=5, tokens_per_day=9, enforcement="throttle", team_active=True, throttle_percent=10
    )
    assert (limits.tokens_per_minute, limits.tokens_per_day) == (1, 1)


@pytest.mark.parametrize(
    ("policy", "enforcement"),
    [("alert", BudgetEnforcement.NONE), ("throttle", BudgetEnforcement.THROTTLE), ("block", BudgetEnforcement.BLOCK)],
)
def test_each_budget_policy_names_the_enforcement_a_spent_budget_brings(
    policy: str, enforcement: BudgetEnforcement
) -> None:
    assert enforcement_when_spent(policy) is enforcement


def test_an_unknown_budget_policy_names_no_enforcement() -> None:
    with pytest.raises(ValueError, match="'explode' is not a valid BudgetEnforcement"):
        enforcement_when_spent("explode")
