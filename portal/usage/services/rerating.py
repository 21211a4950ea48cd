"""Re-rating: stored events rated again with the catalog's prices as they are now, the rollups corrected by
compensating deltas (never recomputed from raw events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction

from portal.core.audit import audit_record
from portal.core.errors import ValidationFailed
from portal.usage import selectors, store
from portal.usage.models import PriceRerate
from portal.usage.rating import rate_pico

if TYPE_CHECKING:  # types only: another app's rows are read through its selectors
    from portal.tenancy.models import User

BACKDATED_PRICE_GRACE = timedelta(minutes=1)


def usage_rerate(
    *, actor: User | None, model_slug: str, since: datetime, until: datetime | None = None, chunk: int = 5000
) -> dict[str, Any]:
    """Rate again the stored events of one model from `since` with the catalog's prices as they are now
    (after a price with an earlier effective date was added); the rollups follow through deltas."""
    if since.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValidationFailed.for_field("since", "must be a date-time with a time zone", code="invalid_datetime")
    if until is not None and until <= since:
        raise ValidationFailed.for_field("until", "must be after since", code="invalid_range")
    model = selectors.model_exists(slug=model_slug)
    if model is None:
        raise ValidationFailed.for_field("model", f"'{model_slug}' is not in the catalog", code="unknown_model")
    end = until or datetime.now(UTC) + timedelta(days=1)
    book = selectors.price_book(model_ids=[model.model_id])
    scanned = changed = 0
    before_pico = after_pico = 0
    after: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "00000000000000000000000000000000")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            events = store.rated_events(
                cursor, model_id=model.model_id, since=since, until=end, after=after, limit=chunk
            )
            if not events:
                break
            rated = []
            for event in events:
                cost, price_ids, problem = rate_pico(
                    book,
                    model.model_id,
                    event.event_time,
                    event.input_tokens,
                    event.cached_input_tokens,
                    event.cache_write_tokens,
                    event.output_tokens,
                    event.reasoning_tokens,
                )
                if not problem:
                    rated.append((event, cost, price_ids))
            set_ids = store.price_set_ids(cursor, {price_ids for _, _, price_ids in rated})
            changes = [
                (event, cost, set_ids[price_ids])
                for event, cost, price_ids in rated
                if cost != event.cost_pico or set_ids[price_ids] != event.price_set_id
            ]
            changed += store.rerate_apply(cursor, changes)
            before_pico += sum(event.cost_pico for event, _, _ in changes)
            after_pico += sum(cost for _, cost, _ in changes)
            scanned += len(events)
            after = (events[-1].event_time, events[-1].key)
    summary = {
        "model": model.slug,
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "events_scanned": scanned,
        "events_changed": changed,
        "cost_before": str(Decimal(before_pico).scaleb(-12)),
        "cost_after": str(Decimal(after_pico).scaleb(-12)),
    }
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="usage.rerate",
            target_type="catalog_model",
            target_id=model.model_id,
            target_label=model.slug,
            before={"cost": summary["cost_before"]},
            after=summary,
        )
    return summary


def usage_rerate_backdated_prices() -> int:
    """Re-rate, once per price, the events a catalog price entered with an earlier effective date applies
    to (a correction of the past); each run is audited by `usage_rerate`. Returns the prices handled."""
    handled = 0
    for price_id, model_slug, effective_from in selectors.backdated_prices(grace=BACKDATED_PRICE_GRACE):
        # Re-rating is idempotent, so it runs before the record: a run that dies leaves the price to the next.
        summary = usage_rerate(actor=None, model_slug=model_slug, since=effective_from)
        PriceRerate.objects.get_or_create(
            price_id=price_id,
            defaults={"model_slug": model_slug, "since": effective_from, "events_changed": summary["events_changed"]},
        )
        handled += 1
    return handled
