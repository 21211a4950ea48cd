"""Tenancy tasks: teams and memberships mirrored from Backstage's groups."""

from __future__ import annotations

import logging

from celery import shared_task

from portal.tenancy.backstage_sync import BackstageCatalogError, backstage_sync_run

logger = logging.getLogger(__name__)


@shared_task(
    name="tenancy.sync_backstage_teams",
    acks_late=True,
    autoretry_for=(BackstageCatalogError,),
    retry_backoff=30,
    max_retries=3,
)
def sync_backstage_teams() -> dict[str, int] | None:
    """Read Backstage's groups and apply them to the teams; a no-op when Backstage is not configured.
    Safe to run twice: it converges on what Backstage says, and a failed read changes nothing."""
    report = backstage_sync_run()
    if report is None:
        return None
    summary = report.summary()
    logger.info("Backstage team sync: %s", summary)
    return summary
