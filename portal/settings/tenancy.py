"""Defaults for new teams' quotas, from the environment."""

from __future__ import annotations

from decimal import Decimal

from portal.settings.env import ENV, ConfigurationError


def _gpu_defaults(entries: list[str]) -> dict[str, int]:
    """Parse "nvidia-l4:2,nvidia-h100-80gb:0" into {accelerator type: GPUs}."""
    gpus: dict[str, int] = {}
    for entry in entries:
        accelerator, separator, count = entry.partition(":")
        if not separator or not accelerator or not count.isdigit():
            raise ConfigurationError(f"PORTAL_DEFAULT_GPU_QUOTA entries must look like 'nvidia-l4:2', got {entry!r}")
        gpus[accelerator] = int(count)
    return gpus


QUOTA_DEFAULTS = {
    "max_deployments": ENV.integer("PORTAL_DEFAULT_MAX_DEPLOYMENTS", 5, minimum=0),
    "tokens_per_minute": ENV.integer("PORTAL_DEFAULT_TOKENS_PER_MINUTE", 100_000, minimum=0),
    "tokens_per_day": ENV.integer("PORTAL_DEFAULT_TOKENS_PER_DAY", 10_000_000, minimum=0),
    "monthly_budget": ENV.decimal("PORTAL_DEFAULT_MONTHLY_BUDGET", Decimal("1000")),
    "budget_policy": ENV.choice(
        "PORTAL_DEFAULT_BUDGET_POLICY", "alert", choices=frozenset({"alert", "throttle", "block"})
    ),
    "gpus": _gpu_defaults(ENV.text_list("PORTAL_DEFAULT_GPU_QUOTA", [])),
}
PORTAL_CURRENCY = ENV.choice("PORTAL_CURRENCY", "USD", choices=frozenset({"USD", "EUR", "GBP"}))
