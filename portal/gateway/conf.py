"""Gateway settings with their defaults; override them in Django settings (portal/settings reads the environment)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from portal.gateway.contracts import MAX_RATE_LIMIT_RULES


def throttle_percent() -> int:
    """Share of a team's token limits left when its budget policy throttles it."""
    return int(getattr(settings, "GATEWAY_THROTTLE_PERCENT", 10))


def reveal_link_lifetime() -> timedelta:
    return timedelta(minutes=int(getattr(settings, "GATEWAY_REVEAL_LINK_MINUTES", 15)))


def default_rotation_overlap() -> timedelta:
    return timedelta(hours=int(getattr(settings, "GATEWAY_ROTATION_OVERLAP_HOURS", 24)))


def max_rotation_overlap() -> timedelta:
    return timedelta(days=int(getattr(settings, "GATEWAY_ROTATION_OVERLAP_MAX_DAYS", 30)))


def otel_collector() -> str:
    """host:port of the OpenTelemetry collector the gateway ships usage access logs to; empty: stdout only."""
    return str(getattr(settings, "GATEWAY_OTEL_COLLECTOR", "") or "")


def max_rate_limit_rules() -> int:
    """Rules one BackendTrafficPolicy may hold: the upstream limit, or less when a platform sets it lower (it can
    never be raised past what Envoy Gateway accepts). Read at call time by the key services and the reconciler."""
    configured = int(getattr(settings, "GATEWAY_MAX_RATE_LIMIT_RULES", MAX_RATE_LIMIT_RULES))
    return max(1, min(configured, MAX_RATE_LIMIT_RULES))
