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
from hashlib import sha256
from itertools import repeat
from operator import add, attrgetter, getitem, gt, itemgetter, methodcaller, mul, sub
from typing import Any, NamedTuple, cast

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction

from portal.usage import metrics, selectors, store
from portal.usage.contracts import EventNote, EventRejection, IngestResult, UsageRecord
from portal.usage.partitions import month_start, next_month, partition_ensure
from portal.usage.rating import MAX_COST_PICO, UNPRICED, Tariff

logger = logging.getLogger(__name__)

_DEADLOCK = "40P01"
_UNIQUE_VIOLATION = "23505"
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


class _Lookups(NamedTuple):
    """What a batch's attribution and rating read: its credentials, the catalog models and team deployments its
    model names can stand for, and the prices of those models (kept per web process: selectors.ingest_lookups)."""

    credentials: dict[str, Any]
    names: dict[str, Any]
    served: dict[str, list[Any]]
    tariff_at: Any


def _lookups(records: Sequence[UsageRecord], kept: selectors.IngestLookups | None = None) -> _Lookups:
    credentials = selectors.credentials_by_client_id({record.client_id for record in records if record.client_id})
    reported = {name for names in set(map(_MODEL_NAMES, records)) for name in names}
    names, served, book = (kept or selectors.ingest_lookups()).rating(names=reported)
    return _Lookups(credentials, names, served, book.tariff)


def _serving(served: dict[str, list[Any]], reported: tuple[str, ...], at: datetime) -> Any | None:
    """Attribution's first rule: the team deployment served under one of the reported names at `at` (the names in
    the order the gateway reported them)."""
    return next((holder for name in reported for holder in served.get(name, ()) if holder.serves_at(at)), None)


def _catalog_model(known: dict[str, Any], reported: tuple[str, ...]) -> Any | None:
    """Its second rule: the catalog model of the first reported name that is one of a catalog model's names."""
    return next((known[name] for name in reported if name in known), None)


def attribute_and_rate(records: Sequence[UsageRecord], lookups: _Lookups | None = None) -> list[Attributed]:
    """Team through the credential the gateway authenticated (never a name the client chose); model through the
    names the gateway reported: first a team deployment that was served under one of them at the event's time
    (its catalog model and version, priced as the catalog model), else a catalog model's own names (managed).
    One pass: the prices of every model the batch's names can stand for are read first, so each event is
    attributed and rated where it is read (rate_pico's rules, through the period's Tariff). The reference: the
    columnar rating (rate_batch) must give the same answer for every batch it takes."""
    credentials, names, served, tariff_at = lookups or _lookups(records)
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
            deployment = _serving(served, record.model_names, record.event_time)
        if deployment is not None:
            model_id, model_slug = deployment.model_id, deployment.model_slug
            deployment_id, model_version_id = deployment.deployment_id, deployment.model_version_id
        else:
            found = managed.get(record.model_names)
            if found is None:
                model = _catalog_model(names, record.model_names)
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


def labels(rows: Sequence[Attributed]) -> tuple[dict[int, str], dict[int, str]]:
    """Model slugs and client ids of the attributed rows, for the rollup deltas."""
    model_slugs = {row.model_id: row.model_slug for row in rows if row.model_id is not None}
    client_ids = {row.credential_id: row.client_label for row in rows if row.credential_id is not None}
    return model_slugs, client_ids


class Rated(NamedTuple):
    """A batch after attribution and rating, a column at a time: one entry per record, in the batch's order
    (`reasons` empty when rated; ids, cost and price ids None or () where the reason leaves them unknown), and the
    labels of the rollup deltas (model slugs by model id, client ids by credential id)."""

    records: Sequence[UsageRecord]
    columns: list[Sequence[Any]]  # the records' fields, a column each (UsageRecord's order)
    reasons: list[str]
    credential_ids: list[int | None]
    team_ids: list[int | None]
    model_ids: list[int | None]
    deployment_ids: list[int | None]
    model_version_ids: list[int | None]
    costs_pico: list[int | None]
    price_ids: list[tuple[int, ...]]
    model_slugs: dict[int, str]
    client_ids: dict[int, str]


def _from_rows(records: Sequence[UsageRecord], rows: list[Attributed]) -> Rated:
    model_slugs, client_ids = labels(rows)
    return Rated(
        records,
        _columns(records),
        [row.reason for row in rows],
        [row.credential_id for row in rows],
        [row.team_id for row in rows],
        [row.model_id for row in rows],
        [row.deployment_id for row in rows],
        [row.model_version_id for row in rows],
        [row.cost_pico for row in rows],
        [row.price_ids for row in rows],
        model_slugs,
        client_ids,
    )


def rate_batch(records: Sequence[UsageRecord], kept: selectors.IngestLookups | None = None) -> Rated:
    """Attribute and rate a batch: a column at a time when every event is rated (the common batch), else event by
    event (attribute_and_rate, which says why each event is kept in quarantine). Both give the same answer
    (tests/portal/usage/test_rate_batch.py)."""
    lookups = _lookups(records, kept)
    return _rated_columns(records, lookups) or _from_rows(records, attribute_and_rate(records, lookups))


def _columns(records: Sequence[UsageRecord]) -> list[Sequence[Any]]:
    """One sequence per UsageRecord field: those the reader kept when it built the records a column at a time
    (contracts.ReadRecords), else the records transposed."""
    kept = getattr(records, "columns", None)
    if kept is not None and len(kept[0]) == len(records):
        return list(kept)
    return list(zip(*records, strict=True)) if records else [()] * len(UsageRecord._fields)


_MODEL_NAMES = attrgetter("model_names")
_CREDENTIAL_ID = attrgetter("credential_id")
_TEAM_ID = attrgetter("team_id")
_INPUT = attrgetter("input_micro")
_CACHED = attrgetter("cached_micro")
_WRITE = attrgetter("write_micro")
_OUTPUT = attrgetter("output_micro")
_REASONING = attrgetter("reasoning_micro")
_REASONING_PRICED = attrgetter("reasoning_priced")
_USED = attrgetter("used")


def _present(column: Sequence[int | None]) -> Sequence[int]:
    """A count column with absent counts as 0 (rating's rule)."""
    if None not in column:
        return column  # type: ignore[return-value]
    return [0 if value is None else value for value in column]


def _charges_python(
    tariffs: Sequence[Tariff], counts: Sequence[Sequence[int | None]]
) -> tuple[list[int], list[int]] | None:
    """(cost, pattern) of every event of a batch, a column at a time, by each event's tariff: absent counts are 0,
    reasoning is charged apart only where priced (as a part of output), the pattern has a bit per non-zero charged
    part (input, cached, write, output, reasoning). None when any event's counts are inconsistent or its cost is out
    of range. The reference for _native.c's charges, and what runs without it."""
    size = len(tariffs)
    inputs, cached, writes, outputs, reasonings = (_present(column) for column in counts)
    if any(map(gt, map(add, cached, writes), inputs)):
        return None
    if True in map(_REASONING_PRICED, tariffs):
        # Reasoning is charged apart only where priced, as a part of output; elsewhere it is charged as output.
        priced = map(_REASONING_PRICED, tariffs)
        reasonings = [tokens if charged else 0 for tokens, charged in zip(reasonings, priced, strict=True)]
        if any(map(gt, reasonings, outputs)):
            return None
        outputs = list(map(sub, outputs, reasonings))
    else:
        reasonings = [0] * size
    uncached = list(map(sub, map(sub, inputs, cached), writes))
    costs = list(
        map(
            add,
            map(
                add,
                map(add, map(mul, uncached, map(_INPUT, tariffs)), map(mul, cached, map(_CACHED, tariffs))),
                map(add, map(mul, writes, map(_WRITE, tariffs)), map(mul, outputs, map(_OUTPUT, tariffs))),
            ),
            map(mul, reasonings, map(_REASONING, tariffs)),
        )
    )
    if max(costs) > MAX_COST_PICO:
        return None
    patterns = [
        (part_input > 0)
        | (part_cached > 0) << 1
        | (part_write > 0) << 2
        | (part_output > 0) << 3
        | (part_reasoning > 0) << 4
        for part_input, part_cached, part_write, part_output, part_reasoning in zip(
            uncached, cached, writes, outputs, reasonings, strict=True
        )
    ]
    return costs, patterns


def _charges(tariffs: Sequence[Tariff], counts: Sequence[Sequence[int | None]]) -> tuple[list[int], list[int]] | None:
    """_charges_python's answer, by the C extension when it is built (about 0.2 µs an event against 1.2): each
    distinct tariff is handed over once, as its prices, and each event as that tariff's index."""
    if store.native is not None:
        distinct = list(set(tariffs))
        position = {tariff: index for index, tariff in enumerate(distinct)}
        prices = [
            (tariff.input_micro, tariff.cached_micro, tariff.write_micro, tariff.output_micro,
             tariff.reasoning_micro, tariff.reasoning_priced)
            for tariff in distinct
        ]  # fmt: skip
        inputs, cached, writes, outputs, reasonings = map(list, counts)
        try:
            return store.native.charges(
                list(map(position.__getitem__, tariffs)),
                prices,
                inputs,
                cached,
                writes,
                outputs,
                reasonings,
                MAX_COST_PICO,
            )
        except (TypeError, ValueError, OverflowError):
            pass
    return _charges_python(tariffs, counts)


def _rated_columns(records: Sequence[UsageRecord], lookups: _Lookups) -> Rated | None:
    """attribute_and_rate's answer computed a column at a time (map() in C: no Python frame per event), for a batch
    whose every event is rated; None as soon as one is not (a quarantine reason is the row-wise reading's to give).
    """
    if not records:
        return None
    credentials, names, served, tariff_at = lookups
    size = len(records)
    columns = _columns(records)
    times, client_ids, model_names = columns[3], columns[4], columns[5]
    found: list[Any] = list(map(credentials.get, client_ids))
    if not all(found):  # all(), not `None in`: a None test would call the credentials' dataclass __eq__ per event
        return None  # a missing or unknown credential
    # Each distinct list of names once: a catalog model's, unless a team deployment was ever served under one of
    # them; those rows are resolved one by one, by the event's time, exactly as attribute_and_rate does.
    models: dict[tuple[str, ...], tuple[int, str, int | None, int | None] | None] = {}
    for reported in set(model_names):
        if not reported:
            return None  # missing_model
        if served and any(name in served for name in reported):
            models[reported] = None
            continue
        model = _catalog_model(names, reported)
        if model is None:
            return None  # unknown_model
        models[reported] = (model.model_id, model.slug, None, None)
    resolved: list[Any] = list(map(models.__getitem__, model_names))
    if None in resolved:
        for position in [position for position, entry in enumerate(resolved) if entry is None]:
            deployment = _serving(served, model_names[position], times[position])
            if deployment is not None:
                if deployment.team_id != found[position].team_id:
                    return None  # deployment_of_another_team
                resolved[position] = (
                    deployment.model_id,
                    deployment.model_slug,
                    deployment.deployment_id,
                    deployment.model_version_id,
                )
            else:
                model = _catalog_model(names, model_names[position])
                if model is None:
                    return None  # unknown_model
                resolved[position] = (model.model_id, model.slug, None, None)
    model_ids, slugs, deployment_ids, version_ids = (list(map(itemgetter(field), resolved)) for field in range(4))
    # The prices of each model: one Tariff for all its events when no price changes between the batch's first and
    # last event (periods are contiguous in time, so the same period at both ends is the same period throughout).
    earliest, latest = min(times), max(times)
    tariffs_of: dict[int, Tariff] = {}
    for model_id in set(model_ids):
        first = tariff_at(model_id, earliest)
        if first is not tariff_at(model_id, latest):
            tariffs = [tariff_at(model, at) or UNPRICED for model, at in zip(model_ids, times, strict=True)]
            break
        tariffs_of[model_id] = first or UNPRICED
    else:
        tariffs = list(map(tariffs_of.__getitem__, model_ids))
    charged = _charges(tariffs, columns[11:16])
    if charged is None:
        return None  # inconsistent_tokens or cost_out_of_range: the row-wise rating says which
    costs = cast("list[int | None]", charged[0])  # Rated holds None for unrated events; these are all rated
    patterns = charged[1]
    price_ids: list[tuple[int, ...]] = list(map(getitem, map(_USED, tariffs), patterns))
    used_credentials = {credentials[client_id] for client_id in set(client_ids)}
    return Rated(
        records,
        columns,
        [""] * size,
        list(map(_CREDENTIAL_ID, found)),
        list(map(_TEAM_ID, found)),
        model_ids,
        deployment_ids,
        version_ids,
        costs,
        price_ids,
        dict(zip(model_ids, slugs, strict=True)),
        {credential.credential_id: credential.client_id for credential in used_credentials},
    )


_DIGEST = methodcaller("digest")


def _keys_python(sources: Sequence[str], event_ids: Sequence[str]) -> list[bytes]:
    """store.event_key of every event (its SHA-256 digest, of which the store keeps 16 bytes), a column at a time:
    about 1.3 µs an event (a hashlib object each). The reference for portal/usage/_native.c's keys."""
    distinct = set(sources)
    if len(distinct) != 1:
        return list(map(store.event_key, sources, event_ids))
    prefix = f"{distinct.pop()}\n".encode()
    return list(map(_DIGEST, map(sha256, map(add, repeat(prefix), map(str.encode, event_ids)))))


def _keys(sources: Sequence[str], event_ids: Sequence[str]) -> list[bytes]:
    """_keys_python's keys, by the C extension when it is built (a batch's events nearly always share a source)."""
    distinct = set(sources)
    if store.native is not None and len(distinct) == 1:
        return store.native.keys(f"{distinct.pop()}\n".encode(), event_ids)
    return _keys_python(sources, event_ids)


def staged(rated: Rated, *, price_sets: dict[tuple[int, ...], int], sources: dict[str, int]) -> store.StagedBatch:
    """The store's columns of a rated batch."""
    records = rated.records
    (_, event_ids, source_names, times, client_ids, model_names, _, _, statuses, durations, ttfts, inputs, cached,
     writes, outputs, reasonings) = rated.columns  # fmt: skip
    reasons = rated.reasons
    details: dict[int, dict[str, Any]] = {}
    if any(reasons):
        codes = store.QUARANTINE_CODES
        quarantines: list[int | None] = [codes[reason] if reason else None for reason in reasons]
        price_set_ids: list[int | None] = [
            None if reason else price_sets[ids] for ids, reason in zip(rated.price_ids, reasons, strict=True)
        ]
        for position, reason in enumerate(reasons):
            if reason:
                details[position] = {
                    "source": source_names[position],
                    "event_id": event_ids[position],
                    "client_id": client_ids[position],
                    "model_names": list(model_names[position]),
                    "reason": reason,
                }
    else:
        quarantines = [None] * len(records)
        price_set_ids = list(map(price_sets.__getitem__, rated.price_ids))
    return store.StagedBatch(
        list(times),
        _keys(source_names, event_ids),
        list(map(sources.__getitem__, source_names)),
        rated.team_ids,
        rated.credential_ids,
        rated.model_ids,
        price_set_ids,
        rated.deployment_ids,
        rated.model_version_ids,
        rated.costs_pico,
        list(statuses),
        list(durations),
        list(ttfts),
        list(inputs),
        list(cached),
        list(writes),
        list(outputs),
        list(reasonings),
        quarantines,
        details,
    )


def _store(rated: Rated, received_at: datetime) -> set[int]:
    """Positions of the batch that were already stored; retried on deadlock, and in the racing form when another
    transaction committed some of the same events meanwhile (store.store_batch), else unavailable."""
    racing = False
    for attempt in range(4):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{settings.USAGE_INGEST_LOCK_TIMEOUT_MS}ms"]
                )
                sources = store.source_ids(cursor, {record.source for record in rated.records})
                price_sets = store.price_set_ids(
                    cursor, {ids for ids, reason in zip(rated.price_ids, rated.reasons, strict=True) if not reason}
                )
                return store.store_batch(
                    cursor,
                    staged(rated, price_sets=price_sets, sources=sources),
                    received_at=received_at,
                    model_slugs=rated.model_slugs,
                    client_ids=rated.client_ids,
                    racing=racing,
                )
        except IntegrityError as error:
            if racing or getattr(error.__cause__, "sqlstate", None) != _UNIQUE_VIOLATION:
                raise
            racing = True
            metrics.STORE_RETRIES.labels("concurrent_copy").inc()
            continue
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
    lags = list(map(max, lags, repeat(0.0)))  # map() in C: no Python frame per event
    histogram._raise_if_not_observable()
    histogram._sum.inc(sum(lags))
    for bucket, count in Counter(map(bisect.bisect_left, repeat(bounds), lags)).items():
        histogram._buckets[bucket].inc(count)


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
    kept = selectors.ingest_lookups()
    candidates, rejected, duplicates = _screen(parsed, kept.source_prefixes(token_id=token_id))
    try:
        if candidates:
            times = list(map(_EVENT_TIME, candidates))
            month, last = month_start(min(times)), month_start(max(times))
            while month <= last:  # every month the batch spans (a batch spans one or two)
                partition_ensure(month)
                month = next_month(month)
        rated = rate_batch(candidates, kept) if candidates else None
        stored_before = _store(rated, received_at) if rated is not None else set()
    except OperationalError as error:
        raise IngestionUnavailable(str(error)) from error
    if stored_before:
        duplicates.extend(
            EventNote(candidates[position].index, candidates[position].event_id) for position in stored_before
        )
    reasons = rated.reasons if rated is not None else []
    quarantined = (
        [
            EventNote(candidates[position].index, candidates[position].event_id, reason)
            for position, reason in enumerate(reasons)
            if reason and position not in stored_before
        ]
        if any(reasons)
        else []
    )
    accepted = len(candidates) - len(stored_before)
    received = received_at.timestamp()
    if stored_before:
        times = [record.event_time for position, record in enumerate(candidates) if position not in stored_before]
    lags = list(map(sub, repeat(received), map(datetime.timestamp, times))) if candidates else []
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
