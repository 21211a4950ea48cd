"""Usage tasks: partitions ahead, rollup recomputation, budget evaluation, GPU-hour accrual, alert delivery,
re-rating. Each is safe to run twice and concurrently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from django.conf import settings

from portal.usage import partitions
from portal.usage import services as usage_services


@shared_task(name="usage.partitions_ensure", acks_late=True)
def partitions_ensure() -> list[str]:
    """Monthly partitions of the raw event table, created ahead of the months that need them."""
    return partitions.partitions_ensure_ahead(
        today=datetime.now(UTC).date(), months_ahead=settings.USAGE_PARTITIONS_AHEAD
    )


@shared_task(name="usage.partitions_drop_old", acks_late=True)
def partitions_drop_old() -> list[str]:
    """Raw events past the retention window go a whole month at a time; rollups stay."""
    return partitions.partitions_drop_older_than(
        today=datetime.now(UTC).date(), months=settings.USAGE_RAW_RETENTION_MONTHS
    )


@shared_task(name="usage.rollups_recompute", acks_late=True)
def rollups_recompute() -> int:
    """Recompute the hourly and daily rollups of every (team, hour) whose events changed."""
    return usage_services.usage_rollups_recompute()


@shared_task(name="usage.budgets_evaluate", acks_late=True)
def budgets_evaluate() -> int:
    return usage_services.budgets_evaluate(recompute_rollups=True)


@shared_task(name="usage.gpu_accrue", acks_late=True)
def gpu_accrue() -> int:
    return usage_services.gpu_usage_accrue()


@shared_task(
    name="usage.deliver_budget_alert",
    acks_late=True,
    autoretry_for=(usage_services.AlertNotDelivered,),
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=6,
)
def deliver_budget_alert(alert_id: int) -> bool:
    if not usage_services.budget_alert_deliver(alert_id=alert_id):
        usage_services.raise_if_alert_undelivered(alert_id=alert_id)
        return False
    return True


@shared_task(name="usage.deliver_pending_alerts", acks_late=True)
def deliver_pending_alerts() -> int:
    """The alert rows are the outbox: anything not delivered yet (broker down, webhook down) is retried."""
    return usage_services.budget_alerts_deliver_pending()


@shared_task(name="usage.rerate_backdated_prices", acks_late=True)
def rerate_backdated_prices() -> int:
    """Catalog prices entered with an earlier effective date re-rate the events they apply to, once each."""
    return usage_services.usage_rerate_backdated_prices()


@shared_task(name="usage.rerate", acks_late=True)
def rerate(model_slug: str, since: str, until: str | None = None) -> dict[str, Any]:
    return usage_services.usage_rerate(
        actor=None,
        model_slug=model_slug,
        since=datetime.fromisoformat(since),
        until=datetime.fromisoformat(until) if until else None,
    )
