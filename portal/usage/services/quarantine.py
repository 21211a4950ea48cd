"""Quarantine release: events kept aside (unknown credential or model) attributed and rated again once what they
name exists; the rollups gain them through deltas, exactly once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.db import connection, transaction

from portal.core.audit import audit_record
from portal.core.errors import ValidationFailed
from portal.usage import store
from portal.usage.contracts import UsageRecord
from portal.usage.services.ingest import attribute_and_rate, labels

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from portal.tenancy.models import User


def usage_quarantine_release(*, actor: User | None, since: datetime, chunk: int = 2000) -> dict[str, int]:
    """Attribute and rate again the quarantined events from `since`: those whose credential or model is now
    known (a key issued late, a model added to the catalog) are rated and counted; the rest stay."""
    if since.tzinfo is None:
        raise ValidationFailed.for_field("since", "must be a date-time with a time zone", code="invalid_datetime")
    scanned = released = 0
    after: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "00000000000000000000000000000000")
    while True:
        page = store.quarantined_page(since=since, after=after, limit=chunk)
        if not page:
            break
        records = [
            UsageRecord(
                index=index,
                event_id=event.event_id,
                source=event.source,
                event_time=event.event_time,
                client_id=event.client_id,
                model_names=event.model_names,
                input_tokens=event.input_tokens,
                cached_input_tokens=event.cached_input_tokens,
                cache_write_tokens=event.cache_write_tokens,
                output_tokens=event.output_tokens,
                reasoning_tokens=event.reasoning_tokens,
            )
            for index, event in enumerate(page)
        ]
        rows = [row for row in attribute_and_rate(records) if not row.reason]
        if rows:
            model_slugs, client_ids = labels(rows)
            with transaction.atomic(), connection.cursor() as cursor:
                set_ids = store.price_set_ids(cursor, {row.price_ids for row in rows})
                events = [
                    store.StoredEvent(
                        event_time=row.record.event_time,
                        key=bytes.fromhex(page[row.record.index].key.replace("-", "")),
                        source_id=0,
                        team_id=row.team_id,
                        credential_id=row.credential_id,
                        model_id=row.model_id,
                        price_set_id=set_ids[row.price_ids],
                        deployment_id=row.deployment_id,
                        model_version_id=row.model_version_id,
                        cost_pico=row.cost_pico,
                        status_code=None,
                        duration_ms=None,
                        ttft_ms=None,
                        input_tokens=None,
                        cached_input_tokens=None,
                        cache_write_tokens=None,
                        output_tokens=None,
                        reasoning_tokens=None,
                    )
                    for row in rows
                ]
                released += store.release(cursor, events, model_slugs=model_slugs, client_ids=client_ids)
        scanned += len(page)
        after = (page[-1].event_time, page[-1].key)
    summary = {"events_scanned": scanned, "events_released": released}
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="usage.quarantine_release",
            target_type="usage_event",
            target_id="quarantine",
            target_label=f"since {since.isoformat()}",
            after={**summary, "since": since.isoformat()},
        )
    return summary
