"""Budget alert delivery to a Slack-compatible webhook: one attempt per call, recorded on the alert row (the outbox);
the Celery task retries with backoff, the periodic sweep catches what was never enqueued."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

from portal.usage import selectors
from portal.usage.models import BudgetAlert


def _alert_text(alert: BudgetAlert) -> str:
    percent = alert.spend * 100 / alert.budget if alert.budget else Decimal(0)
    currency = settings.PORTAL_CURRENCY
    text = (
        f"Team {alert.team.slug} has spent {alert.spend.quantize(Decimal('0.01'))} {currency} of its "
        f"{alert.budget} {currency} budget for {alert.month:%B %Y} ({percent:.1f}%, threshold {alert.threshold}%). "
        f"Projected month end: {alert.projected_spend.quantize(Decimal('0.01'))} {currency}."
    )
    if alert.action:
        text += f" Gateway policy applied: {alert.action}."
    return text


def budget_alert_deliver(*, alert_id: int) -> bool:
    """Post one alert to the configured Slack-compatible webhook; records the outcome. No transaction is held
    across the network call."""
    url = settings.USAGE_BUDGET_WEBHOOK_URL
    alert = BudgetAlert.objects.select_related("team").filter(pk=alert_id).first()
    if alert is None or alert.delivered_at is not None or not url:
        return False
    payload = {
        "text": _alert_text(alert),
        "team": alert.team.slug,
        "month": alert.month.strftime("%Y-%m"),
        "threshold": alert.threshold,
        "spend": str(alert.spend),
        "budget": str(alert.budget),
        "projected_spend": str(alert.projected_spend),
        "currency": settings.PORTAL_CURRENCY,
        "action": alert.action or None,
    }
    request = urllib.request.Request(  # noqa: S310 - the URL is operator configuration, http(s) only
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    error = ""
    try:
        with urllib.request.urlopen(request, timeout=settings.USAGE_BUDGET_WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            delivered = bool(200 <= int(response.status) < 300)
            if not delivered:
                error = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as failure:
        delivered, error = False, str(failure)[:500]
    updates: dict[str, Any] = {"delivery_attempts": alert.delivery_attempts + 1, "last_delivery_error": error}
    if delivered:
        updates["delivered_at"] = datetime.now(UTC)
    BudgetAlert.objects.filter(pk=alert.pk, delivered_at__isnull=True).update(**updates)
    return delivered


class AlertNotDelivered(Exception):
    """The webhook did not take the alert; the task retries with backoff."""


def raise_if_alert_undelivered(*, alert_id: int) -> None:
    """Retry only when a webhook is configured and the alert is still pending."""
    if not settings.USAGE_BUDGET_WEBHOOK_URL:
        return
    if BudgetAlert.objects.filter(pk=alert_id, delivered_at__isnull=True).exists():
        raise AlertNotDelivered(f"budget alert {alert_id} not delivered")


def budget_alerts_deliver_pending() -> int:
    """The alert rows are the outbox: every alert not delivered yet (broker down, webhook down) is tried again.
    Returns how many were tried."""
    pending = alert_ids_pending()
    for alert_id in pending:
        budget_alert_deliver(alert_id=alert_id)
    return len(pending)


def alert_ids_pending() -> list[int]:
    if not settings.USAGE_BUDGET_WEBHOOK_URL:
        return []
    return selectors.alert_pending_ids()
