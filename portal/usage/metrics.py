"""Prometheus metrics of usage ingestion and rollups."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "portal_usage_events_total",
    "Usage events received, by endpoint and outcome (accepted, duplicate, rejected, quarantined)",
    ["endpoint", "outcome"],
)
REJECTIONS = Counter(
    "portal_usage_events_rejected_total", "Usage events rejected, by endpoint and reason", ["endpoint", "reason"]
)
INGEST_LAG = Histogram(
    "portal_usage_ingest_lag_seconds",
    "Time from an event's gateway time to its storage, by endpoint",
    ["endpoint"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 35 * 86400),
)
BATCHES = Counter(
    "portal_usage_batches_total", "Usage batches answered, by endpoint and HTTP status", ["endpoint", "status"]
)
STORE_RETRIES = Counter(
    "portal_usage_store_retries_total",
    "Batches whose store was retried, by cause (concurrent_copy: another request committed some of the same events "
    "meanwhile, and the retry skipped them)",
    ["cause"],
)
ROLLUP_BUCKETS = Counter("portal_usage_rollup_buckets_total", "Hourly (team, hour) buckets recomputed")
