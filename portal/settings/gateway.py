"""Gateway credentials and policy, from the environment (read through portal/gateway/conf.py)."""

from __future__ import annotations

from portal.settings.env import ENV

GATEWAY_THROTTLE_PERCENT = ENV.integer("PORTAL_GATEWAY_THROTTLE_PERCENT", 10, minimum=0, maximum=100)
GATEWAY_REVEAL_LINK_MINUTES = ENV.integer("PORTAL_GATEWAY_REVEAL_LINK_MINUTES", 15, minimum=1, maximum=1440)
GATEWAY_ROTATION_OVERLAP_HOURS = ENV.integer("PORTAL_GATEWAY_ROTATION_OVERLAP_HOURS", 24, minimum=0)
GATEWAY_ROTATION_OVERLAP_MAX_DAYS = ENV.integer("PORTAL_GATEWAY_ROTATION_OVERLAP_MAX_DAYS", 30, minimum=1)
GATEWAY_OTEL_COLLECTOR = ENV.text("PORTAL_GATEWAY_OTEL_COLLECTOR", "") or ""
