"""Housekeeping tasks of the portal itself."""

from __future__ import annotations

from celery import shared_task

from portal.api import services as api_services


@shared_task(name="api.purge_idempotency_records")
def purge_idempotency_records() -> int:
    """Delete stored idempotent responses older than the retention window; safe to run twice."""
    return api_services.idempotency_records_purge_expired()
