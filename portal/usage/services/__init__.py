"""Writes of usage metering, one module per concern: ingestion (ingest, with raw storage behind
portal.usage.store), rollups (the delta compactor), re-rating, quarantine release, GPU-hours, budgets, alert delivery
and collector bindings. Other apps and tasks import the names below from here."""

from portal.usage.services.alerts import (
    AlertNotDelivered,
    alert_ids_pending,
    budget_alert_deliver,
    budget_alerts_deliver_pending,
    raise_if_alert_undelivered,
)
from portal.usage.services.budgets import (
    DELIVER_ALERT_TASK,
    budget_evaluate_team,
    budget_lift,
    budget_thresholds_set,
    budgets_evaluate,
)
from portal.usage.services.collectors import collector_source_bind
from portal.usage.services.gpu_hours import gpu_usage_accrue
from portal.usage.services.ingest import IngestionUnavailable, usage_ingest
from portal.usage.services.quarantine import usage_quarantine_release
from portal.usage.services.rerating import BACKDATED_PRICE_GRACE, usage_rerate, usage_rerate_backdated_prices
from portal.usage.services.rollups import usage_rollups_compact, usage_rollups_recompute

__all__ = [
    "BACKDATED_PRICE_GRACE",
    "DELIVER_ALERT_TASK",
    "AlertNotDelivered",
    "IngestionUnavailable",
    "alert_ids_pending",
    "budget_alert_deliver",
    "budget_alerts_deliver_pending",
    "budget_evaluate_team",
    "budget_lift",
    "budget_thresholds_set",
    "budgets_evaluate",
    "collector_source_bind",
    "gpu_usage_accrue",
    "raise_if_alert_undelivered",
    "usage_ingest",
    "usage_quarantine_release",
    "usage_rerate",
    "usage_rerate_backdated_prices",
    "usage_rollups_compact",
    "usage_rollups_recompute",
]
