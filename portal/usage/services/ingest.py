"""Ingestion: attribute each event to a team through its credential, rate it with the prices in force at its time,
and store it once (portal.usage.store), reporting per event what became of it."""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction

from portal.usage import metrics, selectors, store
from portal.usage.contracts import EventNote, EventRejection, IngestResult, UsageRecord
from portal.usage.partitions import month_start, next_month, partition_ensure
from portal.usage.rating import UNPRICED

logger = logging.getLogger(__name__)

_DEADLOCK = "40P01"
_SERIALIZATION = "40001"


class IngestionUnavailable(Exception):
    """The store cannot take events right now (database down or overloaded); the producer should retry."""


@dataclass(slots=True)
class Attributed:
    """One event after attribution and rating: what is stored, and the labels its rollup delta carries."""

    record: UsageRecord
    reason: str = ""  # why it stays in quarantine; empty when rated
    credential_id: int | None = None
    client_label: str = ""
    team_id: int | None = None
    model_id: int | None = None
    model_slug: str = ""
    deployment_id: int | None = None
    model_version_id: int | None = None
    cost_pico: int | None = None
    price_ids: tuple[int, ...] = ()


def attribute_and_rate(records: Sequence[UsageRecord]) -> list[Attributed]:
    """Team through the credential the gateway authenticated (never a name the client chose); model through the
    names the gateway reported: first a team deployment that was served under one of them at the event's time
    (its catalog model and version, priced as the catalog model), else a catalog model's own names (managed).
    One pass: the prices of every model the batch's names can stand for are read first, so each event is
    attributed and rated where it is read (rate_pico's rules, through the period's Tariff)."""
    credentials = selectors.credentials_by_client_id({record.client_id for record in records if record.client_id})
    reported = {name for record in records for name in record.model_names}
    names = selectors.model_names(names=reported)
    served = selectors.served_names(names=reported)
    candidates = {model.model_id for model in names.values()}
    candidates.update(holder.model_id for holders in served.values() for holder in holders)
    tariff_at = selectors.price_book(model_ids=candidates).tariff
    rows: list[Attributed] = []
    append = rows.append
    # A batch names a handful of models many times over: each list of names is resolved once.
    managed: dict[tuple[str, ...], tuple[int | None, str]] = {}
    for record in records:
        deployment = None
        model_id: int | None
        deployment_id: int | None
        model_version_id: int | None
        credential_id: int | None
        team_id: int | None
        if served:
            deployment = next(
                (
                    holder
                    for name in record.model_names
                    for holder in served.get(name, ())
                    if holder.serves_at(record.event_time)
                ),
                None,
            )
        if deployment is not None:
            model_id, model_slug = deployment.model_id, deployment.model_slug
            deployment_id, model_version_id = deployment.deployment_id, deployment.model_version_id
        else:
            found = managed.get(record.model_names)
            if found is None:
                model = next((names[name] for name in record.model_names if name in names), None)
                found = managed[record.model_names] = (model.model_id, model.slug) if model is not None else (None, "")
            model_id, model_slug = found
            deployment_id = model_version_id = None
        credential = credentials.get(record.client_id) if record.client_id else None
        if credential is not None:
            credential_id, team_id, client_label = credential.credential_id, credential.team_id, credential.client_id
        else:
            credential_id = team_id = None
            client_label = ""
        reason = ""
        cost: int | None = None
        price_ids: tuple[int, ...] = ()
        if not record.client_id:
            reason = "missing_credential"
        elif credential is None:
            reason = "unknown_credential"
        elif not record.model_names:
            reason = "missing_model"
        elif model_id is None:
            reason = "unknown_model"
        elif deployment is not None and deployment.team_id != team_id:
            # The gateway routes a deployment's name only for its own team's keys; if this ever shows up, the
            # cluster's routes are not the portal's, and nobody should be charged until someone looks.
            reason = "deployment_of_another_team"
        else:
            cost, price_ids, reason = (tariff_at(model_id, record.event_time) or UNPRICED).charge(
                record.input_tokens or 0,
                record.cached_input_tokens or 0,
                record.cache_write_tokens or 0,
                record.output_tokens or 0,
                record.reasoning_tokens or 0,
            )
            if reason:
                cost = None
        append(
            Attributed(
                record,
                reason,
                credential_id,
                client_label,
                team_id,
                model_id,
                model_slug,
                deployment_id,
                model_version_id,
                cost,
                price_ids,
            )
        )
    return rows


def stored_form(
    rows: Sequence[Attributed], *, price_sets: dict[tuple[int, ...], int], sources: dict[str, int]
) -> list[store.StoredEvent]:
    events: list[store.StoredEvent] = []
    append = events.append
    event_key = store.event_key
    codes = store.QUARANTINE_CODES
    new = tuple.__new__  # a StoredEvent from its values in field order, without the named tuple's keyword parsing
    stored = store.StoredEvent
    for row in rows:
        record = row.record
        if row.reason:
            detail: dict[str, Any] | None = {
                "source": record.source,
                "event_id": record.event_id,
                "client_id": record.client_id,
                "model_names": list(record.model_names),
                "reason": row.reason,
            }
            price_set_id, cost_pico, quarantine = None, None, codes[row.reason]
        else:
            detail, price_set_id, cost_pico, quarantine = None, price_sets[row.price_ids], row.cost_pico, None
        append(
            new(
                stored,
                (
                    record.event_time,
                    event_key(record.source, record.event_id),
                    sources[record.source],
                    row.team_id,
                    row.credential_id,
                    row.model_id,
                    price_set_id,
                    row.deployment_id,
                    row.model_version_id,
                    cost_pico,
                    record.status_code,
                    record.duration_ms,
                    record.time_to_first_token_ms,
                    record.input_tokens,
                    record.cached_input_tokens,
                    record.cache_write_tokens,
                    record.output_tokens,
                    record.reasoning_tokens,
                    quarantine,
                    detail,
                ),
            )
        )
    return events


def labels(rows: Sequence[Attributed]) -> tuple[dict[int, str], dict[int, str]]:
    """Model slugs and client ids of the attributed rows, for the rollup deltas."""
    model_slugs = {row.model_id: row.model_slug for row in rows if row.model_id is not None}
    client_ids = {row.credential_id: row.client_label for row in rows if row.credential_id is not None}
    return model_slugs, client_ids


def _store(rows: list[Attributed], received_at: datetime) -> set[int]:
    """Positions of `rows` that were already stored; retried on deadlock, else unavailable."""
    model_slugs, client_ids = labels(rows)
    for attempt in range(4):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{settings.USAGE_INGEST_LOCK_TIMEOUT_MS}ms"]
                )
                sources = store.source_ids(cursor, {row.record.source for row in rows})
                price_sets = store.price_set_ids(cursor, {row.price_ids for row in rows if not row.reason})
                events = stored_form(rows, price_sets=price_sets, sources=sources)
                return store.store_batch(
                    cursor, events, received_at=received_at, model_slugs=model_slugs, client_ids=client_ids
                )
        except OperationalError as error:
            code = getattr(getattr(error, "__cause__", None), "sqlstate", None)
            if code in (_DEADLOCK, _SERIALIZATION) and attempt < 3:
                time.sleep(0.01 * (attempt + 1))
                continue
            raise IngestionUnavailable(str(error)) from error
    raise IngestionUnavailable("could not store the batch")  # pragma: no cover


def _observe_lags(histogram: Any, lags: list[float]) -> None:
    """histogram.observe(max(lag, 0)) for each lag, as one update per bucket: observe() costs about 1.7 µs (a
    lock and a walk of the bounds per call), more than storing the event. What observe() does is mirrored from
    prometheus_client's Histogram.observe (metrics.py: the sum, then the first bucket whose bound is >= the value;
    the bounds end with +Inf), through the same value objects, so exposition and multiprocess mode are unchanged."""
    if not lags:
        return
    bounds = histogram._upper_bounds
    lags = [lag if lag > 0.0 else 0.0 for lag in lags]
    histogram._raise_if_not_observable()
    histogram._sum.inc(sum(lags))
    for bucket, count in Counter(bisect.bisect_left(bounds, lag) for lag in lags).items():
        histogram._buckets[bucket].inc(count)


_RECORD = attrgetter("record")
_EVENT_TIME = attrgetter("event_time")
_SOURCE = itemgetter(2)  # a UsageRecord's source
_EVENT_ID = itemgetter(1)  # its event id: events with distinct ids are distinct events, whatever their time


def _screen(
    parsed: list[UsageRecord | EventRejection], prefixes: Any
) -> tuple[list[UsageRecord], list[EventRejection], list[EventNote]]:
    """(candidates, rejections, duplicates within the batch): sources the token may not send are refused, and an
    event repeated in the batch is a duplicate of its first copy. The common batch (every event read, from sources
    the token may send, none repeated) is told apart with C-level passes and taken whole."""
    allowed: dict[str, bool] = {}
    if EventRejection not in set(map(type, parsed)):
        records: list[UsageRecord] = parsed  # type: ignore[assignment]
        allowed = {source: selectors.source_allowed(source, prefixes) for source in set(map(_SOURCE, records))}
        if all(allowed.values()) and len(set(map(_EVENT_ID, records))) == len(records):
            return records, [], []
    rejected: list[EventRejection] = []
    duplicates: list[EventNote] = []
    candidates: list[UsageRecord] = []
    seen: set[tuple[datetime, str, str]] = set()
    for item in parsed:
        if isinstance(item, EventRejection):
            rejected.append(item)
            continue
        identity = (item.event_time, item.source, item.event_id)
        permitted = allowed.get(item.source)
        if permitted is None:
            permitted = allowed[item.source] = selectors.source_allowed(item.source, prefixes)
        if not permitted:
            rejected.append(
                EventRejection(
                    item.index, item.event_id, "source_not_allowed", "source", "this token may not send this source"
                )
            )
        elif identity in seen:
            duplicates.append(EventNote(item.index, item.event_id))
        else:
            seen.add(identity)
            candidates.append(item)
    return candidates, rejected, duplicates


def usage_ingest(
    *, token_id: int, parsed: list[UsageRecord | EventRejection], endpoint: str, received_at: datetime | None = None
) -> IngestResult:
    """Store a batch once: rejected events are reported, duplicates (in the batch, or already stored, or
    stored concurrently by another request) are reported and counted once, unknown credentials or models are
    kept in quarantine. Not atomic: each event stands alone, so a producer may retry the whole batch. A
    credential's "last used" is advanced by the rollup compactor, not here (see rollups)."""
    received_at = received_at or datetime.now(UTC)
    prefixes = selectors.collector_source_prefixes(token_id=token_id)
    candidates, rejected, duplicates = _screen(parsed, prefixes)
    rows = attribute_and_rate(candidates)
    try:
        if rows:
            times = [row.record.event_time for row in rows]
            month, last = month_start(min(times)), month_start(max(times))
            while month <= last:  # every month the batch spans (a batch spans one or two)
                partition_ensure(month)
                month = next_month(month)
        stored_before = _store(rows, received_at) if rows else set()
    except OperationalError as error:
        raise IngestionUnavailable(str(error)) from error
    if stored_before:
        duplicates.extend(
            EventNote(rows[position].record.index, rows[position].record.event_id) for position in stored_before
        )
        rows = [row for position, row in enumerate(rows) if position not in stored_before]
    accepted = len(rows)
    quarantined = [EventNote(row.record.index, row.record.event_id, row.reason) for row in rows if row.reason]
    received = received_at.timestamp()
    lags = [received - moment for moment in map(datetime.timestamp, map(_EVENT_TIME, map(_RECORD, rows)))]
    _observe_lags(metrics.INGEST_LAG.labels(endpoint), lags)
    metrics.EVENTS.labels(endpoint, "accepted").inc(accepted - len(quarantined))
    metrics.EVENTS.labels(endpoint, "quarantined").inc(len(quarantined))
    metrics.EVENTS.labels(endpoint, "duplicate").inc(len(duplicates))
    metrics.EVENTS.labels(endpoint, "rejected").inc(len(rejected))
    for rejection in rejected:
        metrics.REJECTIONS.labels(endpoint, rejection.reason).inc()
    return IngestResult(
        accepted=accepted,
        duplicates=tuple(sorted(duplicates, key=lambda note: note.index)),
        quarantined=tuple(sorted(quarantined, key=lambda note: note.index)),
        rejected=tuple(sorted(rejected, key=lambda rejection: rejection.index)),
    )
