"""Usage metering: ingestion bounds, lateness window, budget thresholds and the alert webhook."""

from __future__ import annotations

from portal.settings.env import ENV, ConfigurationError


def _thresholds(entries: list[str]) -> tuple[int, ...]:
    """Parse "50,80,100" into sorted, distinct percentages between 1 and 1000."""
    values: set[int] = set()
    for entry in entries:
        if not entry.isdigit() or not 1 <= int(entry) <= 1000:
            raise ConfigurationError(f"PORTAL_BUDGET_THRESHOLDS entries must be percentages 1..1000, got {entry!r}")
        values.add(int(entry))
    return tuple(sorted(values))


# One batch: at most this many events and this many bytes once decompressed. The OpenTelemetry collector's batch
# processor sends 8,192 records by default (send_batch_size), so one of its exports fits in one request; per-request
# costs (authentication, lookups, a transaction) are spread over that many events.
USAGE_MAX_BATCH_EVENTS = ENV.integer("PORTAL_USAGE_MAX_BATCH_EVENTS", 10_000, minimum=1, maximum=100_000)
USAGE_MAX_BATCH_BYTES = ENV.integer("PORTAL_USAGE_MAX_BATCH_BYTES", 16 * 1024 * 1024, minimum=1024)
# Events older than this (by their gateway time) are refused as too late; newer than now + skew as in the future.
USAGE_MAX_EVENT_AGE_DAYS = ENV.integer("PORTAL_USAGE_MAX_EVENT_AGE_DAYS", 35, minimum=1, maximum=3660)
USAGE_MAX_CLOCK_SKEW_SECONDS = ENV.integer("PORTAL_USAGE_MAX_CLOCK_SKEW_SECONDS", 300, minimum=0)
# Monthly partitions of the raw event table kept ready ahead of the current month.
USAGE_PARTITIONS_AHEAD = ENV.integer("PORTAL_USAGE_PARTITIONS_AHEAD", 2, minimum=1, maximum=24)
# Raw events are kept this many months (whole partitions are dropped after); rollups are kept for ever.
USAGE_RAW_RETENTION_MONTHS = ENV.integer("PORTAL_USAGE_RAW_RETENTION_MONTHS", 13, minimum=3, maximum=120)
# Budget thresholds in percent of the monthly budget (a team may set its own).
USAGE_BUDGET_THRESHOLDS = _thresholds(ENV.text_list("PORTAL_BUDGET_THRESHOLDS", ["50", "80", "100"]))
# Slack-compatible incoming webhook for budget alerts; unset means alerts are only recorded.
USAGE_BUDGET_WEBHOOK_URL = ENV.url("PORTAL_BUDGET_WEBHOOK_URL", schemes=frozenset({"http", "https"}))
USAGE_BUDGET_WEBHOOK_TIMEOUT_SECONDS = ENV.integer("PORTAL_BUDGET_WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1, maximum=60)
# Seconds a producer is asked to wait when ingestion is unavailable (Retry-After on 503).
USAGE_RETRY_AFTER_SECONDS = ENV.integer("PORTAL_USAGE_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600)
# Ingestion waits at most this long for a lock (partition DDL, a long re-rate) before answering 503.
USAGE_INGEST_LOCK_TIMEOUT_MS = ENV.integer("PORTAL_USAGE_INGEST_LOCK_TIMEOUT_MS", 5000, minimum=10)
# Requests per minute of one collector token to the ingestion endpoints: a rate limit of its own, sized for batches
# (a collector sending 1,000-event batches at 60,000 events/s makes 3,600 requests a minute), not the API's.
USAGE_INGEST_RATE_LIMIT = ENV.text("PORTAL_USAGE_INGEST_RATE_LIMIT", "60000/minute")
