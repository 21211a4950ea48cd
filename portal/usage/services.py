"""Writes of usage metering: ingestion (attribute, rate, store once), rollup recomputation, re-rating,
GPU-hour accrual, budget evaluation and enforcement, alert delivery, and collector source bindings."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import OperationalError, connection, transaction

from portal.api.models import ApiToken, Scope
from portal.core.audit import audit_record
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.deployments.models import ReplicaObservation
from portal.gateway import services as gateway_services
from portal.tenancy.models import Team, TeamQuota, User
from portal.usage import metrics, selectors
from portal.usage.contracts import EventNote, EventRejection, IngestResult, UsageRecord
from portal.usage.models import (
    BudgetAlert,
    BudgetState,
    CollectorSource,
    Enforcement,
    GpuAccrualCursor,
    GpuUsage,
    PriceRerate,
    TeamBudgetSettings,
)
from portal.usage.partitions import month_start, partition_ensure
from portal.usage.rating import PriceBook, rate

logger = logging.getLogger(__name__)

DELIVER_ALERT_TASK = "usage.deliver_budget_alert"
_DEADLOCK = "40P01"
_SERIALIZATION = "40001"


class IngestionUnavailable(Exception):
    """The store cannot take events right now (database down or overloaded); the producer should retry."""


# --- ingestion --------------------------------------------------------------------------------------------


@dataclass
class _Row:
    record: UsageRecord
    state: str
    reason: str = ""
    credential_id: int | None = None
    team_id: int | None = None
    model_id: int | None = None
    model_slug: str = ""
    deployment_id: int | None = None
    model_version_id: int | None = None
    cost: Decimal | None = None
    price_ids: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[datetime, str, str]:
        return (self.record.event_time, self.record.source, self.record.event_id)


# The batch travels as one JSON parameter (serialized in C, parsed by the server): far cheaper than adapting
# thousands of Python values one by one.
_INSERT_SQL = """
INSERT INTO usage_event (
    event_time, source, event_id, received_at, client_id, credential_id, team_id, model_name, model_id, model_slug,
    deployment_id, model_version_id, provider, route, status_code, duration_ms, input_tokens, cached_input_tokens,
    cache_write_tokens, output_tokens, reasoning_tokens, cost, price_ids, state, reason, extras)
SELECT t, s, i, %s, c, cr, tm, mn, mi, ms, dp, mv, pv, rt, sc, du, it, ci, cw, ot, rs, co, pi, st, re, ex
FROM ROWS FROM (json_to_recordset(%s::json) AS (
    t timestamptz, s text, i text, c text, cr bigint, tm bigint, mn text, mi bigint, ms text, dp bigint, mv bigint,
    pv text, rt text, sc integer, du bigint, it bigint, ci bigint, cw bigint, ot bigint, rs bigint, co numeric,
    pi bigint[], st text, re text, ex jsonb)) WITH ORDINALITY AS u(t, s, i, c, cr, tm, mn, mi, ms, dp, mv, pv, rt, sc,
    du, it, ci, cw, ot, rs, co, pi, st, re, ex, n)
ORDER BY n
ON CONFLICT (event_time, source, event_id) DO NOTHING
RETURNING event_time, source, event_id
"""

_MARK_DIRTY_SQL = """
INSERT INTO usage_dirty_hour (hour, team_id)
SELECT h, t FROM unnest(%s::timestamptz[], %s::bigint[]) WITH ORDINALITY AS u(h, t, n) ORDER BY n
ON CONFLICT (hour, team_id) DO NOTHING
"""


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _attribute_and_rate(records: list[UsageRecord]) -> list[_Row]:
    """Team through the credential the gateway authenticated (never a name the client chose); model through the
    names the gateway reported: first a team deployment that was served under one of them at the event's time
    (its catalog model and version, priced as the catalog model), else a catalog model's own names (managed)."""
    credentials = selectors.credentials_by_client_id(record.client_id for record in records if record.client_id)
    names = selectors.model_names()
    served = selectors.served_names(names={name for record in records for name in record.model_names})
    rows: list[_Row] = []
    for record in records:
        deployment = next(
            (
                holder
                for name in record.model_names
                for holder in served.get(name, ())
                if holder.serves_at(record.event_time)
            ),
            None,
        )
        model = (
            selectors.ModelRef(deployment.model_id, deployment.model_slug)
            if deployment is not None
            else next((names[name] for name in record.model_names if name in names), None)
        )
        credential = credentials.get(record.client_id) if record.client_id else None
        row = _Row(record=record, state="quarantined")
        if model is not None:
            row.model_id, row.model_slug = model.model_id, model.slug
        if deployment is not None:
            row.deployment_id, row.model_version_id = deployment.deployment_id, deployment.model_version_id
        if credential is not None:
            row.credential_id, row.team_id = credential.credential_id, credential.team_id
        if not record.client_id:
            row.reason = "missing_credential"
        elif credential is None:
            row.reason = "unknown_credential"
        elif not record.model_names:
            row.reason = "missing_model"
        elif model is None:
            row.reason = "unknown_model"
        elif deployment is not None and deployment.team_id != credential.team_id:
            # The gateway routes a deployment's name only for its own team's keys; if this ever shows up, the
            # cluster's routes are not the portal's, and nobody should be charged until someone looks.
            row.reason = "deployment_of_another_team"
        else:
            row.state = "rated"
        rows.append(row)
    book = selectors.price_book(model_ids={row.model_id for row in rows if row.state == "rated" and row.model_id})
    for row in rows:
        if row.state == "rated":
            _rate_row(row, book)
    return rows


def _rate_row(row: _Row, book: PriceBook) -> None:
    record = row.record
    rating = rate(
        book=book,
        model_id=row.model_id or 0,
        at=record.event_time,
        input_tokens=record.input_tokens,
        cached_input_tokens=record.cached_input_tokens,
        cache_write_tokens=record.cache_write_tokens,
        output_tokens=record.output_tokens,
        reasoning_tokens=record.reasoning_tokens,
    )
    if rating.problem:
        row.state, row.reason = "quarantined", rating.problem
        return
    row.cost, row.price_ids = rating.cost, rating.price_ids


def _array(values: Sequence[int]) -> str:
    return "{" + ",".join(str(value) for value in values) + "}"


def _insert(rows: list[_Row], received_at: datetime) -> set[tuple[datetime, str, str]]:
    rows = sorted(rows, key=lambda row: row.key)  # one lock order for every batch: no deadlocks between them
    document = json.dumps(
        [
            {
                "t": row.record.event_time.isoformat(),
                "s": row.record.source,
                "i": row.record.event_id,
                "c": row.record.client_id,
                "cr": row.credential_id,
                "tm": row.team_id,
                "mn": row.record.model_name,
                "mi": row.model_id,
                "ms": row.model_slug,
                "dp": row.deployment_id,
                "mv": row.model_version_id,
                "pv": row.record.provider,
                "rt": row.record.route,
                "sc": row.record.status_code,
                "du": row.record.duration_ms,
                "it": row.record.input_tokens,
                "ci": row.record.cached_input_tokens,
                "cw": row.record.cache_write_tokens,
                "ot": row.record.output_tokens,
                "rs": row.record.reasoning_tokens,
                "co": None if row.cost is None else str(row.cost),
                "pi": list(row.price_ids),
                "st": row.state,
                "re": row.reason,
                "ex": row.record.extras or None,
            }
            for row in rows
        ]
    )
    for attempt in range(4):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{settings.USAGE_INGEST_LOCK_TIMEOUT_MS}ms"]
                )
                cursor.execute(_INSERT_SQL, [received_at, document])
                inserted = {(moment, source, event_id) for moment, source, event_id in cursor.fetchall()}
                _mark_dirty(
                    cursor,
                    {
                        (_hour(row.record.event_time), row.team_id or 0)
                        for row in rows
                        if row.state == "rated" and row.key in inserted
                    },
                )
            return inserted
        except OperationalError as error:
            code = getattr(getattr(error, "__cause__", None), "sqlstate", None)
            if code in (_DEADLOCK, _SERIALIZATION) and attempt < 3:
                time.sleep(0.01 * (attempt + 1))
                continue
            raise IngestionUnavailable(str(error)) from error
    raise IngestionUnavailable("could not store the batch")  # pragma: no cover


# "Last used" is advanced at most once a minute per credential and process: one write per busy key, not per batch.
_MARK_USED_EVERY = timedelta(minutes=1)
_last_marked: dict[int, datetime] = {}


def _worth_marking(last_used: dict[int, datetime]) -> dict[int, datetime]:
    due = {}
    for credential_id, used_at in last_used.items():
        marked = _last_marked.get(credential_id)
        if marked is None or used_at - marked >= _MARK_USED_EVERY or used_at < marked - _MARK_USED_EVERY:
            due[credential_id] = used_at
            if len(_last_marked) > 100_000:
                _last_marked.clear()
            _last_marked[credential_id] = used_at
    return due


def usage_ingest(
    *, token_id: int, parsed: list[UsageRecord | EventRejection], endpoint: str, received_at: datetime | None = None
) -> IngestResult:
    """Store a batch once: rejected events are reported, duplicates (in the batch, or already stored, or
    stored concurrently by another request) are reported and counted once, unknown credentials or models are
    kept in quarantine. Not atomic: each event stands alone, so a producer may retry the whole batch."""
    received_at = received_at or datetime.now(UTC)
    prefixes = selectors.collector_source_prefixes(token_id=token_id)
    rejected: list[EventRejection] = []
    duplicates: list[EventNote] = []
    candidates: list[UsageRecord] = []
    seen: set[tuple[datetime, str, str]] = set()
    for item in parsed:
        if isinstance(item, EventRejection):
            rejected.append(item)
        elif not selectors.source_allowed(item.source, prefixes):
            rejected.append(
                EventRejection(
                    item.index, item.event_id, "source_not_allowed", "source", "this token may not send this source"
                )
            )
        elif (item.event_time, item.source, item.event_id) in seen:
            duplicates.append(EventNote(item.index, item.event_id))
        else:
            seen.add((item.event_time, item.source, item.event_id))
            candidates.append(item)
    rows = _attribute_and_rate(candidates)
    try:
        for month in sorted({month_start(row.record.event_time) for row in rows}):
            partition_ensure(month)
        inserted = _insert(rows, received_at) if rows else set()
    except OperationalError as error:
        raise IngestionUnavailable(str(error)) from error
    accepted = 0
    quarantined: list[EventNote] = []
    last_used: dict[int, datetime] = {}
    lag = metrics.INGEST_LAG.labels(endpoint)
    for row in rows:
        if row.key not in inserted:
            duplicates.append(EventNote(row.record.index, row.record.event_id))
            continue
        accepted += 1
        if row.state == "quarantined":
            quarantined.append(EventNote(row.record.index, row.record.event_id, row.reason))
        if row.credential_id is not None:
            previous = last_used.get(row.credential_id)
            if previous is None or previous < row.record.event_time:
                last_used[row.credential_id] = row.record.event_time
        lag.observe(max((received_at - row.record.event_time).total_seconds(), 0.0))
    last_used = _worth_marking(last_used)
    if last_used:
        try:
            gateway_services.credential_mark_used(last_used=last_used)
        except Exception:  # "last used" is informational; it must never fail an ingestion already committed
            logger.warning("could not record credential last use", exc_info=True)
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


# --- rollups ----------------------------------------------------------------------------------------------

# Rolling up without stalling ingestion, and without losing an event:
# 1. claim: dirty marks move to usage_rollup_claim in a short transaction (a new event re-marks its bucket);
# 2. barrier: for each claimed team, an exclusive advisory lock is taken and released at once; it waits for
#    every ingestion transaction that holds the team's shared lock, i.e. that may have seen the old mark and
#    not yet committed its events;
# 3. recompute in a transaction that starts after the barrier (so it sees those events) and deletes the claims.
# A run that dies between 1 and 3 leaves claims that the next run takes over once they are stale.
_INGEST_BARRIER = "usage_ingest"
_ROLLUP_LOCK = "usage_rollup"
STALE_CLAIM = timedelta(minutes=10)

_RETAKE_STALE_SQL = """
UPDATE usage_rollup_claim c SET claimed_at = clock_timestamp()
FROM (SELECT id FROM usage_rollup_claim WHERE claimed_at < %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) s
WHERE c.id = s.id
RETURNING c.id, c.hour, c.team_id, c.claimed_at
"""

_CLAIM_SQL = """
WITH picked AS (
    DELETE FROM usage_dirty_hour d
    USING (SELECT id FROM usage_dirty_hour ORDER BY team_id, hour LIMIT %s FOR UPDATE SKIP LOCKED) p
    WHERE d.id = p.id
    RETURNING d.hour, d.team_id
)
INSERT INTO usage_rollup_claim (hour, team_id, claimed_at)
SELECT hour, team_id, clock_timestamp() FROM picked
ON CONFLICT (hour, team_id) DO UPDATE SET claimed_at = EXCLUDED.claimed_at
RETURNING id, hour, team_id, claimed_at
"""

_CLAIM_DELETE_SQL = """
DELETE FROM usage_rollup_claim c USING unnest(%s::bigint[], %s::timestamptz[]) AS u(id, claimed_at)
WHERE c.id = u.id AND c.claimed_at = u.claimed_at
"""

_HOURLY_DELETE_SQL = """
DELETE FROM usage_hourly h USING unnest(%s::timestamptz[], %s::bigint[]) AS c(hour, team_id)
WHERE h.team_id = c.team_id AND h.hour = c.hour
"""

# Claimed hours are grouped into runs of consecutive hours per team, so a month of dirty hours is one index range
# scan per team rather than one probe per hour.
_HOURLY_INSERT_SQL = """
INSERT INTO usage_hourly (team_id, hour, model_id, model_slug, credential_id, client_id, requests, failed_requests,
    unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
SELECT e.team_id, date_trunc('hour', e.event_time, 'UTC'), e.model_id, max(e.model_slug), e.credential_id,
    max(e.client_id), count(*), count(*) FILTER (WHERE e.status_code >= 400),
    count(*) FILTER (WHERE e.input_tokens IS NULL AND e.output_tokens IS NULL),
    coalesce(sum(e.input_tokens), 0), coalesce(sum(e.cached_input_tokens), 0), coalesce(sum(e.cache_write_tokens), 0),
    coalesce(sum(e.output_tokens), 0), coalesce(sum(e.reasoning_tokens), 0), sum(e.cost)
FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS r(team_id, lo, hi)
JOIN usage_event e ON e.team_id = r.team_id AND e.event_time >= r.lo AND e.event_time < r.hi
WHERE e.state = 'rated'
GROUP BY e.team_id, date_trunc('hour', e.event_time, 'UTC'), e.model_id, e.credential_id
"""


def _runs(claimed: list[tuple[int, datetime]]) -> list[tuple[int, datetime, datetime]]:
    """(team, first hour, end) for each run of consecutive claimed hours of a team; `claimed` is sorted."""
    runs: list[tuple[int, datetime, datetime]] = []
    for team_id, hour in claimed:
        end = hour + timedelta(hours=1)
        if runs and runs[-1][0] == team_id and runs[-1][2] == hour:
            runs[-1] = (team_id, runs[-1][1], end)
        else:
            runs.append((team_id, hour, end))
    return runs


_DAILY_DELETE_SQL = """
DELETE FROM usage_daily d USING unnest(%s::date[], %s::bigint[]) AS c(day, team_id)
WHERE d.team_id = c.team_id AND d.day = c.day
"""

_DAILY_INSERT_SQL = """
INSERT INTO usage_daily (team_id, day, model_id, model_slug, credential_id, client_id, requests, failed_requests,
    unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost)
SELECT h.team_id, c.day, h.model_id, max(h.model_slug), h.credential_id, max(h.client_id), sum(h.requests),
    sum(h.failed_requests), sum(h.unmetered_requests), sum(h.input_tokens), sum(h.cached_input_tokens),
    sum(h.cache_write_tokens), sum(h.output_tokens), sum(h.reasoning_tokens), sum(h.cost)
FROM unnest(%s::date[], %s::bigint[]) AS c(day, team_id)
JOIN usage_hourly h ON h.team_id = c.team_id AND h.hour >= (c.day::timestamp AT TIME ZONE 'UTC')
    AND h.hour < ((c.day + 1)::timestamp AT TIME ZONE 'UTC')
GROUP BY h.team_id, c.day, h.model_id, h.credential_id
"""


def _lock_key(team_id: int) -> int:
    return team_id % 2**31


def usage_rollups_recompute(*, batch_size: int = 500, max_batches: int = 1000) -> int:
    """Recompute the hourly rollups of changed (team, hour) buckets from raw events, then the days they
    fall in from the hours: replace, never increment, so replays, late events and re-rating are exact.
    Safe to run concurrently and to die at any point (see the protocol above)."""
    recomputed = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_RETAKE_STALE_SQL, [datetime.now(UTC) - STALE_CLAIM, batch_size])
            claims = {claim_id: (hour, team_id, at) for claim_id, hour, team_id, at in cursor.fetchall()}
            cursor.execute(_CLAIM_SQL, [batch_size])
            claims.update({claim_id: (hour, team_id, at) for claim_id, hour, team_id, at in cursor.fetchall()})
        if not claims:
            break
        claimed = sorted({(team_id, hour) for hour, team_id, _ in claims.values()})
        teams = sorted({team_id for team_id, _ in claimed})
        for team_id in teams:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s), %s::integer)", [_INGEST_BARRIER, _lock_key(team_id)]
                )
        with transaction.atomic(), connection.cursor() as cursor:
            for team_id in teams:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s), %s::integer)", [_ROLLUP_LOCK, _lock_key(team_id)]
                )
            cursor.execute(_HOURLY_DELETE_SQL, [[hour for _, hour in claimed], [team_id for team_id, _ in claimed]])
            runs = _runs(claimed)
            cursor.execute(
                _HOURLY_INSERT_SQL, [[run[0] for run in runs], [run[1] for run in runs], [run[2] for run in runs]]
            )
            days = sorted({(team_id, hour.astimezone(UTC).date()) for team_id, hour in claimed})
            day_values = [day for _, day in days]
            day_teams = [team_id for team_id, _ in days]
            cursor.execute(_DAILY_DELETE_SQL, [day_values, day_teams])
            cursor.execute(_DAILY_INSERT_SQL, [day_values, day_teams])
            cursor.execute(_CLAIM_DELETE_SQL, [list(claims), [at for _, _, at in claims.values()]])
        recomputed += len(claimed)
        metrics.ROLLUP_BUCKETS.inc(len(claimed))
    return recomputed


def _mark_dirty(cursor: Any, buckets: set[tuple[datetime, int]]) -> None:
    """Mark buckets dirty in the caller's transaction, holding each team's shared barrier lock until it
    commits: a rollup that claimed an existing mark waits for these events before it recomputes."""
    ordered = sorted(buckets)
    if not ordered:
        return
    cursor.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtext(%s), t) FROM (SELECT DISTINCT t FROM unnest(%s::integer[]) "
        "AS t ORDER BY t) AS teams",
        [_INGEST_BARRIER, sorted({_lock_key(team) for _, team in ordered})],
    )
    cursor.execute(_MARK_DIRTY_SQL, [[hour for hour, _ in ordered], [team for _, team in ordered]])


# --- re-rating --------------------------------------------------------------------------------------------

_RERATE_SELECT_SQL = """
SELECT event_time, source, event_id, team_id, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, cost, price_ids
FROM usage_event
WHERE model_id = %s AND state = 'rated' AND event_time >= %s AND event_time < %s
    AND (event_time, source, event_id) > (%s, %s, %s)
ORDER BY event_time, source, event_id
LIMIT %s
"""

_RERATE_UPDATE_SQL = """
UPDATE usage_event e SET cost = u.cost, price_ids = u.price_ids::bigint[]
FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::numeric[], %s::text[]) AS u(t, s, i, cost, price_ids)
WHERE e.event_time = u.t AND e.source = u.s AND e.event_id = u.i
"""


def usage_rerate(
    *, actor: User | None, model_slug: str, since: datetime, until: datetime | None = None, chunk: int = 5000
) -> dict[str, Any]:
    """Rate again the stored events of one model from `since` with the catalog's prices as they are now
    (after a price with an earlier effective date was added), and recompute the rollups they touch."""
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
    cost_before = cost_after = Decimal(0)
    cursor_key: tuple[datetime, str, str] = (datetime(1970, 1, 1, tzinfo=UTC), "", "")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_RERATE_SELECT_SQL, [model.model_id, since, end, *cursor_key, chunk])
            events = cursor.fetchall()
            if not events:
                break
            updates: list[tuple[datetime, str, str, Decimal, str]] = []
            dirty: set[tuple[datetime, int]] = set()
            for event_time, source, event_id, team_id, it, ci, cw, ot, rs, cost, price_ids in events:
                rating = rate(
                    book=book,
                    model_id=model.model_id,
                    at=event_time,
                    input_tokens=it,
                    cached_input_tokens=ci,
                    cache_write_tokens=cw,
                    output_tokens=ot,
                    reasoning_tokens=rs,
                )
                if rating.problem:
                    continue
                if rating.cost != cost or tuple(rating.price_ids) != tuple(price_ids or ()):
                    updates.append((event_time, source, event_id, rating.cost, _array(rating.price_ids)))
                    dirty.add((_hour(event_time), team_id))
                    cost_before += cost
                    cost_after += rating.cost
            if updates:
                cursor.execute(_RERATE_UPDATE_SQL, [list(column) for column in zip(*updates, strict=True)])
                _mark_dirty(cursor, dirty)
            scanned += len(events)
            changed += len(updates)
            cursor_key = (events[-1][0], events[-1][1], events[-1][2])
    summary = {
        "model": model.slug,
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "events_scanned": scanned,
        "events_changed": changed,
        "cost_before": str(cost_before),
        "cost_after": str(cost_after),
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


BACKDATED_PRICE_GRACE = timedelta(minutes=1)


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


# --- quarantine ------------------------------------------------------------------------------------------

_QUARANTINE_SELECT_SQL = """
SELECT event_time, source, event_id, client_id, model_name, extras, input_tokens, cached_input_tokens,
    cache_write_tokens, output_tokens, reasoning_tokens
FROM usage_event
WHERE state = 'quarantined' AND event_time >= %s AND (event_time, source, event_id) > (%s, %s, %s)
ORDER BY event_time, source, event_id
LIMIT %s
"""

_QUARANTINE_RELEASE_SQL = """
UPDATE usage_event e SET state = 'rated', reason = '', credential_id = u.cr, team_id = u.tm, model_id = u.mi,
    model_slug = u.ms, deployment_id = u.dp, model_version_id = u.mv, cost = u.co, price_ids = u.pi
FROM json_to_recordset(%s::json) AS u(t timestamptz, s text, i text, cr bigint, tm bigint, mi bigint, ms text,
    dp bigint, mv bigint, co numeric, pi bigint[])
WHERE e.event_time = u.t AND e.source = u.s AND e.event_id = u.i AND e.state = 'quarantined'
"""


def usage_quarantine_release(*, actor: User | None, since: datetime, chunk: int = 2000) -> dict[str, int]:
    """Attribute and rate again the quarantined events from `since`: those whose credential or model is now
    known (a key issued late, a model added to the catalog) are rated and counted; the rest stay."""
    if since.tzinfo is None:
        raise ValidationFailed.for_field("since", "must be a date-time with a time zone", code="invalid_datetime")
    scanned = released = 0
    cursor_key: tuple[datetime, str, str] = (datetime(1970, 1, 1, tzinfo=UTC), "", "")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_QUARANTINE_SELECT_SQL, [since, *cursor_key, chunk])
            events = cursor.fetchall()
            if not events:
                break
            records = []
            for index, (event_time, source, event_id, client_id, model_name, extras, *tokens) in enumerate(events):
                extra = json.loads(extras) if isinstance(extras, str) else (extras or {})
                reported = extra.get("model_names") if isinstance(extra, dict) else None
                model_names = tuple(dict.fromkeys(name for name in (model_name, *(reported or ())) if name))
                records.append(
                    UsageRecord(
                        index=index,
                        event_id=event_id,
                        source=source,
                        event_time=event_time,
                        client_id=client_id,
                        model_names=model_names,
                        input_tokens=tokens[0],
                        cached_input_tokens=tokens[1],
                        cache_write_tokens=tokens[2],
                        output_tokens=tokens[3],
                        reasoning_tokens=tokens[4],
                    )
                )
            rows = [row for row in _attribute_and_rate(records) if row.state == "rated"]
            if rows:
                cursor.execute(
                    _QUARANTINE_RELEASE_SQL,
                    [
                        json.dumps(
                            [
                                {
                                    "t": row.record.event_time.isoformat(),
                                    "s": row.record.source,
                                    "i": row.record.event_id,
                                    "cr": row.credential_id,
                                    "tm": row.team_id,
                                    "mi": row.model_id,
                                    "ms": row.model_slug,
                                    "dp": row.deployment_id,
                                    "mv": row.model_version_id,
                                    "co": str(row.cost),
                                    "pi": list(row.price_ids),
                                }
                                for row in rows
                            ]
                        )
                    ],
                )
                _mark_dirty(cursor, {(_hour(row.record.event_time), row.team_id or 0) for row in rows})
            scanned += len(events)
            released += len(rows)
            cursor_key = (events[-1][0], events[-1][1], events[-1][2])
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


# --- GPU-hours --------------------------------------------------------------------------------------------

GPU_HOURS_PLACES = Decimal("0.000000001")
MONEY_PLACES = Decimal("0.000000000001")


def _hour_pieces(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    pieces = []
    cursor = start
    while cursor < end:
        boundary = _hour(cursor) + timedelta(hours=1)
        piece_end = min(boundary, end)
        pieces.append((cursor, piece_end))
        cursor = piece_end
    return pieces


def gpu_usage_accrue(*, now: datetime | None = None) -> int:
    """Accrue GPU-hours of self-hosted deployments up to `now`: the integral of the replicas the reconciler observed
    (deployments.ReplicaObservation, a change log) x GPUs per replica x the pool's hourly price, split at each
    change and each UTC hour. A deployment is charged from its first observed replica, for every change between
    runs, and until it is gone. Exactly once: a cursor per deployment is locked and advanced in the same
    transaction as the rows it adds. Returns the GpuUsage rows written."""
    now = now or datetime.now(UTC)
    prices = selectors.pool_prices()
    written = 0
    for deployment_id in selectors.gpu_accrual_due():
        with transaction.atomic():
            first = selectors.replica_observation_at(deployment_id=deployment_id)
            if first is None or first.observed_at >= now:
                continue
            cursor, _ = GpuAccrualCursor.objects.select_for_update().get_or_create(
                deployment_id=deployment_id,
                defaults={"sampled_at": first.observed_at, "observed_replicas": first.replicas},
            )
            current = selectors.replica_observation_at(deployment_id=deployment_id, at=cursor.sampled_at)
            if cursor.sampled_at >= now or current is None:
                continue
            start, replicas = cursor.sampled_at, cursor.observed_replicas
            for change in selectors.replica_observations(deployment_id=deployment_id, after=start, until=now):
                written += _charge_gpus(current, replicas, start, change.observed_at, prices)
                current, start, replicas = change, change.observed_at, change.replicas
            written += _charge_gpus(current, replicas, start, now, prices)
            cursor.sampled_at, cursor.observed_replicas = now, replicas
            cursor.save(update_fields=["sampled_at", "observed_replicas"])
    return written


def _charge_gpus(
    deployment: ReplicaObservation,
    replicas: int,
    start: datetime,
    end: datetime,
    prices: dict[tuple[int, str], Decimal],
) -> int:
    """One GpuUsage row per UTC hour of [start, end) at `replicas`; none when nothing ran."""
    if not replicas or not deployment.gpus_per_replica or end <= start:
        return 0
    price = prices.get((deployment.cluster_id, deployment.accelerator_type), Decimal(0))
    written = 0
    for piece_start, piece_end in _hour_pieces(start, end):
        seconds = Decimal((piece_end - piece_start) // timedelta(microseconds=1)) / Decimal(3_600_000_000)
        gpu_hours = (seconds * replicas * deployment.gpus_per_replica).quantize(
            GPU_HOURS_PLACES, rounding=ROUND_HALF_EVEN
        )
        _, created = GpuUsage.objects.get_or_create(
            deployment_id=deployment.deployment_id,
            started_at=piece_start,
            defaults={
                "deployment_name": deployment.deployment_name,
                "team_id": deployment.team_id,
                "cluster_name": deployment.cluster_name,
                "accelerator_type": deployment.accelerator_type,
                "ended_at": piece_end,
                "replicas": replicas,
                "gpus_per_replica": deployment.gpus_per_replica,
                "gpu_hours": gpu_hours,
                "price_per_gpu_hour": price,
                "cost": (gpu_hours * price).quantize(MONEY_PLACES),
            },
        )
        written += created
    return written


# --- budgets ----------------------------------------------------------------------------------------------


def _send_after_commit(task: str, object_id: int) -> None:
    def send() -> None:
        try:
            current_app.send_task(task, args=[object_id])
        except Exception:  # the alert row is the outbox: the periodic sweep delivers what was not sent
            logger.warning("could not enqueue %s for %s", task, object_id, exc_info=True)

    transaction.on_commit(send)


def budget_evaluate_team(*, team_id: int, now: datetime | None = None) -> BudgetState | None:
    """Spend of the team's current month against its budget: alerts for newly crossed thresholds (once per
    month and threshold), and at 100 percent the team's policy applied through its gateway policy."""
    now = now or datetime.now(UTC)
    month = month_start(now)
    with transaction.atomic():
        quota = TeamQuota.objects.select_related("team").filter(team_id=team_id).first()
        if quota is None:
            return None
        team = quota.team
        token_cost, gpu_cost = selectors.team_month_spend(team_id=team_id, month=month)
        spend = token_cost + gpu_cost
        BudgetState.objects.get_or_create(team=team, month=month, defaults={"budget": quota.monthly_budget})
        state = BudgetState.objects.select_for_update().get(team=team, month=month)
        state.budget = quota.monthly_budget
        state.spend = spend
        state.projected_spend = selectors.projected_month_end(spend=spend, month=month, now=now)
        state.evaluated_at = now
        percent = spend * 100 / quota.monthly_budget if quota.monthly_budget > 0 else Decimal(0)
        policy = quota.budget_policy
        enforce = percent >= 100 and policy in (Enforcement.THROTTLE, Enforcement.BLOCK) and state.lifted_at is None
        action = ""
        if enforce and state.enforcement != policy:
            gateway_services.team_budget_enforcement_set(
                actor=None,
                team=team,
                enforcement=policy,
                reason=f"monthly budget spent ({percent:.1f}% of {quota.monthly_budget})",
            )
            before = state.enforcement
            state.enforcement, state.enforced_at, action = policy, now, policy
            audit_record(
                actor=None,
                action="budget.enforce",
                target_type="team",
                target_id=team.pk,
                target_label=team.slug,
                team_slug=team.slug,
                before={"enforcement": before},
                after={"enforcement": policy, "month": month.isoformat(), "spend": str(spend)},
            )
        elif not enforce and state.enforcement != Enforcement.NONE and state.lifted_at is None:
            # The budget was raised or the policy relaxed: spend is within it again.
            gateway_services.team_budget_enforcement_set(
                actor=None, team=team, enforcement=Enforcement.NONE, reason="spend within the budget again"
            )
            audit_record(
                actor=None,
                action="budget.release",
                target_type="team",
                target_id=team.pk,
                target_label=team.slug,
                team_slug=team.slug,
                before={"enforcement": state.enforcement},
                after={"enforcement": "none", "reason": "within budget"},
            )
            state.enforcement = Enforcement.NONE
        state.save()
        if quota.monthly_budget > 0:
            for threshold in selectors.team_thresholds(team=team):
                if percent < threshold:
                    continue
                alert, created = BudgetAlert.objects.get_or_create(
                    team=team,
                    month=month,
                    threshold=threshold,
                    defaults={
                        "spend": spend,
                        "budget": quota.monthly_budget,
                        "projected_spend": state.projected_spend,
                        "action": action if threshold >= 100 else "",
                    },
                )
                if created:
                    _send_after_commit(DELIVER_ALERT_TASK, alert.pk)
    return state


def budgets_evaluate(*, now: datetime | None = None, recompute_rollups: bool = False) -> int:
    """Release last month's enforcement (a new month starts with a new budget), then evaluate every team; with
    recompute_rollups, first bring the rollups up to what just arrived."""
    if recompute_rollups:
        usage_rollups_recompute()
    now = now or datetime.now(UTC)
    for state_id in list(selectors.budget_states_to_release(before=month_start(now)).values_list("pk", flat=True)):
        with transaction.atomic():
            state = BudgetState.objects.select_for_update().select_related("team").get(pk=state_id)
            if state.released_at is not None:
                continue
            gateway_services.team_budget_enforcement_set(
                actor=None, team=state.team, enforcement=Enforcement.NONE, reason="a new budget month"
            )
            audit_record(
                actor=None,
                action="budget.release",
                target_type="team",
                target_id=state.team.pk,
                target_label=state.team.slug,
                team_slug=state.team.slug,
                before={"enforcement": state.enforcement, "month": state.month.isoformat()},
                after={"enforcement": "none", "reason": "new month"},
            )
            state.released_at = now
            state.save(update_fields=["released_at", "updated_at"])
    team_ids = selectors.team_ids_with_budgets(month=month_start(now))
    for team_id in team_ids:
        budget_evaluate_team(team_id=team_id, now=now)
    return len(team_ids)


def budget_lift(*, actor: User, team: Team, reason: str, now: datetime | None = None) -> BudgetState:
    """A platform admin lifts this month's enforcement early; it stays lifted until the month ends."""
    now = now or datetime.now(UTC)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed.for_field("reason", "say why the budget enforcement is lifted", code="required")
    if len(reason) > 500:
        raise ValidationFailed.for_field("reason", "must be at most 500 characters", code="max_length")
    with transaction.atomic():
        state = BudgetState.objects.select_for_update().filter(team=team, month=month_start(now)).first()
        if state is None or state.enforcement == Enforcement.NONE:
            raise Conflict(
                f"Team '{team.slug}' has no budget enforcement to lift this month", code="budget_not_enforced"
            )
        gateway_services.team_budget_enforcement_set(
            actor=actor, team=team, enforcement=Enforcement.NONE, reason=f"lifted: {reason}"
        )
        before = {"enforcement": state.enforcement}
        state.enforcement = Enforcement.NONE
        state.lifted_at, state.lifted_by, state.lift_reason = now, actor, reason
        state.save()
        audit_record(
            actor=actor,
            action="budget.lift",
            target_type="team",
            target_id=team.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before=before,
            after={"enforcement": "none", "reason": reason, "month": state.month.isoformat()},
        )
    return state


def budget_thresholds_set(*, actor: User, team: Team, thresholds: list[int]) -> tuple[int, ...]:
    problems = []
    if not isinstance(thresholds, list) or not thresholds or len(thresholds) > 10:
        raise ValidationFailed.for_field("thresholds", "give 1 to 10 percentages", code="invalid")
    for index, value in enumerate(thresholds):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            problems.append(f"thresholds[{index}]")
    if problems:
        raise ValidationFailed.for_field(problems[0], "must be a whole percentage from 1 to 1000", code="invalid")
    if len(set(thresholds)) != len(thresholds):
        raise ValidationFailed.for_field("thresholds", "must not repeat a percentage", code="duplicate")
    ordered = sorted(thresholds)
    with transaction.atomic():
        before = selectors.team_thresholds(team=team)
        TeamBudgetSettings.objects.update_or_create(team=team, defaults={"thresholds": ordered})
        audit_record(
            actor=actor,
            action="budget.thresholds",
            target_type="team",
            target_id=team.pk,
            target_label=team.slug,
            team_slug=team.slug,
            before={"thresholds": list(before)},
            after={"thresholds": ordered},
        )
    return tuple(ordered)


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


# --- collectors -------------------------------------------------------------------------------------------


def collector_source_bind(*, actor: User | None, token_id: int, source_prefix: str) -> CollectorSource:
    """Allow a usage collector token to send events of sources starting with `source_prefix` ('*': any)."""
    prefix = (source_prefix or "").strip()
    if not prefix or len(prefix) > 255 or "\x00" in prefix:
        raise ValidationFailed.for_field("source_prefix", "give a source prefix of 1 to 255 characters", code="invalid")
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"Token {token_id} not found", code="token_not_found")
    if Scope.USAGE_WRITE not in token.scopes:
        raise ValidationFailed.for_field("token", "the token lacks the 'usage:write' scope", code="scope_missing")
    with transaction.atomic():
        binding, created = CollectorSource.objects.get_or_create(token=token, source_prefix=prefix)
        if created:
            audit_record(
                actor=actor,
                action="usage.collector_source_bind",
                target_type="api_token",
                target_id=token.pk,
                target_label=token.prefix,
                after={"source_prefix": prefix},
            )
    return binding


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
