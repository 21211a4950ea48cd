"""Right-sizing (catalog/sizing.py): what the serving engine keeps of each GPU, and the managed-price blend."""

from __future__ import annotations

from portal.settings.env import ENV

SIZING_GPU_MEMORY_UTILIZATION_PERCENT = ENV.integer(
    "PORTAL_SIZING_GPU_MEMORY_UTILIZATION_PERCENT", 90, minimum=10, maximum=100
)
SIZING_OVERHEAD_MIB = ENV.integer("PORTAL_SIZING_OVERHEAD_MIB", 2048, minimum=0)
SIZING_INPUT_SHARE_PERCENT = ENV.integer("PORTAL_SIZING_INPUT_SHARE_PERCENT", 75, minimum=0, maximum=100)
