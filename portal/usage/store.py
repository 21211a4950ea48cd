"""Raw usage event storage, the one seam between metering and the engine that keeps raw events: the lean table's
DDL, storing a batch exactly once (with the rollup deltas of what it added), the reads and updates of re-rating and
quarantine release (with their compensating deltas), and what a stored event costs in bytes. Swapping raw storage
to another engine (a column store behind a log) replaces this module; rollups, budgets and everything else stay in
PostgreSQL and only see deltas.

What a stored event keeps, and why (the old table kept about 1,000 bytes an event):
- its identity as a 16-byte key: the first 128 bits of SHA-256 over source and event id. Exactly-once needs only
  the key; an auditor who holds a gateway record (source and x-request-id or event id) computes the key and finds
  the event. The id text itself is not kept for rated events.
- its source as a small id into `usage_source` (a handful of gateways, not 40 bytes of text per event);
- attribution (team, credential, catalog model, deployment and model version) as integers, and the price rows that
  rated it as one id into `usage_price_set`: what billing, re-rating and audit need;
- token counts (integers: no request carries 2^31 tokens), cost as an integer in 10^-12 units, status code,
  duration and time to first token (request health), received time (late-event and period-close audit);
- not kept for rated events: the credential's client id (the credential's), the model names as reported (the
  attributed model and deployment are kept), route, provider and the rest of the event's data document (none of
  billing, re-rating or audit reads them; the gateway's own access log keeps them). Quarantined events keep
  their source, id, client id and model names in `usage_quarantined_event`, since they are attributed again later.
- one index: the unique key (event time, event key), which is also the time-range index re-rating scans; no team
  index (reports and budgets read rollups, never raw events)."""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import repeat
from operator import floordiv, sub
from typing import Any, NamedTuple

from django.db import connection

from portal.usage.models import LATENCY_BOUNDS_MS, RAW_EVENT_TABLE
from portal.usage.partitions import month_start, partition_name

try:  # built by `make install` and the image (k8s/image/steps.sh extensions); the Python twins stand in without it
    from portal.usage import _native as native
except ImportError:  # pragma: no cover - tests/portal/usage/test_native.py requires it where it is built
    native = None  # type: ignore[assignment]

# Why an event is kept in quarantine, stored as a small code; the text is what producers and admins read.
QUARANTINE_REASONS = (
    "missing_credential",
    "unknown_credential",
    "missing_model",
    "unknown_model",
    "deployment_of_another_team",
    "inconsistent_tokens",
    "cost_out_of_range",
)
QUARANTINE_CODES = {reason: code for code, reason in enumerate(QUARANTINE_REASONS, start=1)}

CREATE_RAW_TABLE = """
CREATE TABLE usage_event (
    event_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    cost_pico bigint,
    event_key uuid NOT NULL,
    source_id integer NOT NULL,
    team_id integer,
    credential_id integer,
    model_id integer,
    price_set_id integer,
    deployment_id integer,
    model_version_id integer,
    duration_ms integer,
    ttft_ms integer,
    input_tokens integer,
    cached_input_tokens integer,
    cache_write_tokens integer,
    output_tokens integer,
    reasoning_tokens integer,
    status_code smallint,
    quarantine smallint,
    CONSTRAINT usage_event_key UNIQUE (event_time, event_key),
    CONSTRAINT usage_event_rated_is_attributed CHECK (
        quarantine IS NOT NULL OR (team_id IS NOT NULL AND credential_id IS NOT NULL AND model_id IS NOT NULL
                                   AND cost_pico IS NOT NULL AND price_set_id IS NOT NULL)
    ),
    CONSTRAINT usage_event_not_negative CHECK (
        cost_pico >= 0 AND input_tokens >= 0 AND cached_input_tokens >= 0 AND cache_write_tokens >= 0
        AND output_tokens >= 0 AND reasoning_tokens >= 0 AND duration_ms >= 0 AND ttft_ms >= 0
    )
) PARTITION BY RANGE (event_time);
CREATE INDEX usage_event_quarantined ON usage_event (event_time) WHERE quarantine IS NOT NULL;
"""
DROP_RAW_TABLE = "DROP TABLE IF EXISTS usage_event CASCADE;"

# The staging table of a batch: every column NOT NULL and of fixed width, so a row of the binary COPY is a fixed
# layout (_native.c copy_rows, or one struct.pack of _ROW). What is absent is a value no event can have: 0 for an id (serials start at 1), -1 for a
# count, a cost, a status code or a quarantine code (the readers keep counts in [0, 2^31), status codes in [0, 999]).
_STAGING_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS usage_event_stage (
    position integer NOT NULL, event_time timestamptz NOT NULL, event_key uuid NOT NULL, source_id integer NOT NULL,
    team_id integer NOT NULL, credential_id integer NOT NULL, model_id integer NOT NULL,
    price_set_id integer NOT NULL, deployment_id integer NOT NULL, model_version_id integer NOT NULL,
    cost_pico bigint NOT NULL, status_code smallint NOT NULL, duration_ms integer NOT NULL, ttft_ms integer NOT NULL,
    input_tokens integer NOT NULL, cached_input_tokens integer NOT NULL, cache_write_tokens integer NOT NULL,
    output_tokens integer NOT NULL, reasoning_tokens integer NOT NULL, quarantine smallint NOT NULL
) ON COMMIT DELETE ROWS;
DELETE FROM usage_event_stage;
"""
_COPY_STAGING = "COPY usage_event_stage FROM STDIN (FORMAT BINARY)"
# PostgreSQL's binary COPY (docs, "COPY", "Binary Format"): a signature, flags and header extension length, then per
# row a 16-bit field count and, per field, a 32-bit length and the value in network order (int2/int4/int8 as
# integers, a timestamptz as int8 microseconds since 2000-01-01 UTC, a uuid as its 16 bytes), then a -1 trailer.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
_COPY_TRAILER = b"\xff\xff"
_ROW = struct.Struct(">h" + "ii" + "iq" + "i16s" + "ii" * 7 + "iq" + "ih" + "ii" * 7 + "ih")
_FIELD_SIZES = (4, 8, 16, 4, 4, 4, 4, 4, 4, 4, 8, 2, 4, 4, 4, 4, 4, 4, 4, 2)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Every rollup delta carries the same sums (see deltas_python) over the raw rows it adds.
DELTA_COLUMNS = (
    "hour, team_id, model_id, credential_id, deployment_id, model_slug, client_id, requests, failed_requests, "
    "unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
    "cost_pico, last_event_at, latency_buckets, ttft_buckets"
)


def _histogram(column: str) -> str:
    """Counts of the rows per request-health bucket of `column` (milliseconds), as one array."""
    edges = (0, *LATENCY_BOUNDS_MS)
    parts = [
        f"count(*) FILTER (WHERE e.{column} >= {low} AND e.{column} < {high})"
        for low, high in itertools.pairwise(edges)
    ]
    parts.append(f"count(*) FILTER (WHERE e.{column} >= {edges[-1]})")
    return "ARRAY[" + ", ".join(parts) + "]"


# The UTC hour of an event: date_bin with a UTC origin is integer arithmetic on the timestamp, where date_trunc
# with a zone converts each value to the zone and back; same hour (PostgreSQL docs, 9.9.3 date_bin).
_UTC_EPOCH = "timestamptz '2000-01-01 00:00:00+00'"


def _with_histograms(sql: str) -> str:
    # Only constants are put into the statement (the bucket bounds, the hours' origin), never input.
    return (
        sql.replace("__LATENCY_HISTOGRAM__", _histogram("duration_ms"))
        .replace("__TTFT_HISTOGRAM__", _histogram("ttft_ms"))
        .replace("__UTC_EPOCH__", _UTC_EPOCH)
    )


# One statement stores the staged batch: rows whose key is already stored are skipped, the details of quarantined
# events go beside the rows they explain, and the answer is the staged positions that were duplicates; the rollup
# deltas of what was inserted follow in the same transaction (_insert_deltas). The insert is in key order, so
# concurrent batches take index locks in one order and never deadlock. Two forms (_store_sql):
# - First, each staged row's key is looked up in the index (one probe a row), and the rows not found go in by a plain
#   INSERT. ON CONFLICT DO NOTHING would look up the key too, then insert speculatively and confirm: a third WAL
#   record a row, about 1.3 µs of the database's CPU a row more (measured on 200,000 rows, 10 percent of them
#   duplicates). The EXISTS carries OFFSET 0 so that it stays a per-row subplan: PostgreSQL pulls a plain EXISTS up
#   into an anti-join, and with the staging table unanalyzed it chose to sort the whole partition for each batch
#   (explain, 45,000 rows stored: a seq scan and sort of all of them). The probe reads the statement's snapshot, so
#   a concurrent batch holding the same key, not yet committed, is not seen; the plain insert then waits for it and
#   fails with a unique violation if it commits.
# - Then the caller retries its transaction with ON CONFLICT DO NOTHING, which waits for the concurrent copy and skips
#   what it committed (PostgreSQL docs, INSERT, "ON CONFLICT Clause"): a concurrent replay costs one retry.
# Either way the inserted rows are exactly the staged rows not answered as duplicates.
_INSERT = """
INSERT INTO usage_event (event_time, received_at, cost_pico, event_key, source_id, team_id, credential_id,
    model_id, price_set_id, deployment_id, model_version_id, duration_ms, ttft_ms, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, status_code, quarantine)
SELECT event_time, %(received_at)s, cost_pico, event_key, source_id, team_id, credential_id, model_id,
    price_set_id, deployment_id, model_version_id, duration_ms, ttft_ms, input_tokens, cached_input_tokens,
    cache_write_tokens, output_tokens, reasoning_tokens, status_code, quarantine
FROM (SELECT event_time, event_key, source_id, NULLIF(team_id, 0) AS team_id,
        NULLIF(credential_id, 0) AS credential_id, NULLIF(model_id, 0) AS model_id,
        NULLIF(price_set_id, 0) AS price_set_id, NULLIF(deployment_id, 0) AS deployment_id,
        NULLIF(model_version_id, 0) AS model_version_id, NULLIF(cost_pico, -1) AS cost_pico,
        NULLIF(status_code, -1) AS status_code, NULLIF(duration_ms, -1) AS duration_ms,
        NULLIF(ttft_ms, -1) AS ttft_ms, NULLIF(input_tokens, -1) AS input_tokens,
        NULLIF(cached_input_tokens, -1) AS cached_input_tokens,
        NULLIF(cache_write_tokens, -1) AS cache_write_tokens, NULLIF(output_tokens, -1) AS output_tokens,
        NULLIF(reasoning_tokens, -1) AS reasoning_tokens, NULLIF(quarantine, -1) AS quarantine
    FROM __ROWS__ ORDER BY event_time, event_key) AS s
__ON_CONFLICT__
"""
_DETAILS = """
    INSERT INTO usage_quarantined_event (event_time, event_key, source, event_id, client_id, model_names, reason,
        received_at)
    SELECT s.event_time, s.event_key, d.source, d.event_id, d.client_id, d.model_names, d.reason, %(received_at)s
    FROM unnest(%(detail_positions)s::integer[], %(details)s::text[]) AS q(position, detail)
    __INSERTED__
    CROSS JOIN LATERAL json_to_record(q.detail::json)
        AS d(source text, event_id text, client_id text, model_names text[], reason text)
    ON CONFLICT (event_time, event_key) DO NOTHING
"""
_STORE_SQL = f"""
WITH staged AS MATERIALIZED (
    SELECT s.*, EXISTS (
        SELECT FROM usage_event x WHERE x.event_time = s.event_time AND x.event_key = s.event_key OFFSET 0
    ) AS stored
    FROM usage_event_stage s
), inserted AS ({_INSERT.replace("__ROWS__", "staged WHERE NOT stored").replace("__ON_CONFLICT__", "")}
), details AS ({_DETAILS.replace("__INSERTED__", "JOIN staged s ON s.position = q.position AND NOT s.stored")})
SELECT position FROM staged WHERE stored
"""  # noqa: S608 (only this module's constants are formatted in)
_STORE_RACING_SQL = f"""
WITH inserted AS ({
    _INSERT.replace("__ROWS__", "usage_event_stage").replace(
        "__ON_CONFLICT__", "ON CONFLICT (event_time, event_key) DO NOTHING RETURNING event_time, event_key"
    )
}), details AS ({
    _DETAILS.replace(
        "__INSERTED__",
        "JOIN usage_event_stage s ON s.position = q.position "
        "JOIN inserted e ON e.event_time = s.event_time AND e.event_key = s.event_key",
    )
})
SELECT s.position FROM usage_event_stage s
WHERE (SELECT count(*) FROM inserted) < %(staged)s  -- a one-time filter: no anti-join when every row was new
    AND NOT EXISTS (SELECT 1 FROM inserted e WHERE e.event_time = s.event_time AND e.event_key = s.event_key)
"""  # noqa: S608 (only this module's constants are formatted in)

# The rollup deltas of the inserted rows, computed from the batch's columns (_native.c deltas, or deltas_python)
# rather than by the store statement: grouping and summing every inserted row there cost about 1.8 µs of the
# database's CPU a row (a sort and 30 aggregates), where the C grouping costs about 0.2 µs of the web process's.
# They go in by a text COPY of a few hundred lines a batch: as array parameters, psycopg's Python array dumper cost
# about 3 µs an event (a regular expression per element).
_COPY_DELTAS = (
    "COPY usage_rollup_delta (hour, team_id, model_id, credential_id, deployment_id, model_slug, client_id, "
    "requests, failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, "
    "output_tokens, reasoning_tokens, cost_pico, last_event_at, latency_buckets, ttft_buckets) FROM STDIN"
)
# COPY's text format: a backslash, tab, newline or carriage return in a value is written escaped (PostgreSQL docs,
# "COPY", "Text Format"); \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class Delta(NamedTuple):
    """One rollup delta of a stored batch: a group's sums, as the SQL deltas of re-rating and release carry them.
    `hour` and `last_event_at` are microseconds since 2000-01-01 UTC (PostgreSQL's epoch)."""

    hour: int
    team_id: int
    model_id: int
    credential_id: int
    deployment_id: int | None
    requests: int
    failed_requests: int
    unmetered_requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_pico: int
    last_event_at: int
    latency_buckets: list[int]
    ttft_buckets: list[int]


def _delta_columns(batch: StagedBatch) -> tuple[list[Any], ...]:
    """The columns deltas are computed from, in the order _native.c's deltas takes them."""
    return (
        batch.event_times,
        batch.team_ids,
        batch.credential_ids,
        batch.model_ids,
        batch.deployment_ids,
        batch.costs_pico,
        batch.status_codes,
        batch.durations_ms,
        batch.ttfts_ms,
        batch.input_tokens,
        batch.cached_input_tokens,
        batch.cache_write_tokens,
        batch.output_tokens,
        batch.reasoning_tokens,
        batch.quarantines,
    )


def deltas_python(batch: StagedBatch, skip: set[int]) -> list[Delta]:
    """The rollup deltas of the batch's rated rows whose position is not in `skip`, grouped by UTC hour, team, model,
    credential and deployment: what the store statement's SQL grouping computed (count, status >= 400, both counts
    absent, sums with absent as 0, the latest time, request-health buckets [low, high) of LATENCY_BOUNDS_MS with the
    last one open, absent values in none). The reference for _native.c's deltas, and what runs without it."""
    hour_micros = 3_600_000_000
    groups: dict[tuple[int, int, int, int, int | None], list[Any]] = {}
    size = len(LATENCY_BOUNDS_MS) + 1
    for position, (at, team, credential, model, deployment, cost, status, duration, ttft, *tokens, code) in enumerate(
        zip(*_delta_columns(batch), strict=True)
    ):
        if code is not None or position in skip:
            continue
        micros = (at - _PG_EPOCH) // _MICROSECOND
        key = (micros - micros % hour_micros, team, model, credential, deployment)
        group = groups.get(key)
        if group is None:
            group = groups[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0, micros, [0] * size, [0] * size]
        group[0] += 1
        group[1] += status is not None and status >= 400
        group[2] += tokens[0] is None and tokens[3] is None
        for index, count in enumerate(tokens):
            group[3 + index] += count or 0
        group[8] += cost or 0
        group[9] = max(group[9], micros)
        if duration is not None:
            group[10][bisect.bisect_right(LATENCY_BOUNDS_MS, duration)] += 1
        if ttft is not None:
            group[11][bisect.bisect_right(LATENCY_BOUNDS_MS, ttft)] += 1
    return [Delta(*key, *sums) for key, sums in groups.items()]  # order: the groups' first rows, as _native.c's


def batch_deltas(batch: StagedBatch, skip: set[int]) -> list[Delta]:
    """deltas_python's answer, by the C extension when it is built and takes the batch (every time in UTC)."""
    if native is not None:
        try:
            return list(
                map(tuple.__new__, repeat(Delta), native.deltas(_delta_columns(batch), skip, LATENCY_BOUNDS_MS))
            )
        except (TypeError, ValueError, OverflowError):
            pass
    return deltas_python(batch, skip)


def _micros_text(micros: int) -> str:
    return (_PG_EPOCH + timedelta(microseconds=micros)).isoformat()


def _insert_deltas(
    cursor: Any, deltas: Sequence[Delta], *, model_slugs: dict[int, str], client_ids: dict[int, str]
) -> None:
    if not deltas:
        return
    slugs = {model_id: slug.translate(_COPY_ESCAPES) for model_id, slug in model_slugs.items()}
    clients = {credential_id: client.translate(_COPY_ESCAPES) for credential_id, client in client_ids.items()}
    hours = {micros: _micros_text(micros) for micros in {delta.hour for delta in deltas}}
    null = "\\N"  # COPY's NULL
    lines = [
        f"{hours[hour]}\t{team}\t{model}\t{credential}\t{null if deployment is None else deployment}\t"
        f"{slugs.get(model, '')}\t{clients.get(credential, '')}\t{requests}\t{failed}\t{unmetered}\t{tokens}\t"
        f"{cached}\t{write}\t{output}\t{reasoning}\t{cost}\t{_micros_text(last)}\t"
        f"{{{','.join(map(str, latency))}}}\t{{{','.join(map(str, ttft))}}}\n"
        for (hour, team, model, credential, deployment, requests, failed, unmetered, tokens, cached, write, output,
             reasoning, cost, last, latency, ttft) in deltas
    ]  # fmt: skip
    with cursor.cursor.copy(_COPY_DELTAS) as copy:
        copy.write("".join(lines).encode())


@functools.cache
def _store_sql(partition: str | None, *, racing: bool) -> str:
    """The store statement (racing: the ON CONFLICT form), inserting into and probing one partition when given (a
    name partition_name made, never input), else the partitioned table."""
    sql = _STORE_RACING_SQL if racing else _STORE_SQL
    if partition is None:
        return sql
    return sql.replace("INSERT INTO usage_event (", f"INSERT INTO {partition} (", 1).replace(
        "FROM usage_event x", f"FROM {partition} x", 1
    )


def event_key(source: str, event_id: str) -> bytes:
    """The stored identity of an event: 128 bits of SHA-256 over its source and id (a uuid's 16 bytes)."""
    return hashlib.sha256(f"{source}\n{event_id}".encode()).digest()[:16]


class StoredEvent(NamedTuple):
    """One event as this store keeps it (quarantine release builds these): `key` is event_key()'s 16 bytes,
    `quarantine` the code of its reason (QUARANTINE_CODES) and `detail` what a quarantined event keeps beside it."""

    event_time: datetime
    key: bytes
    source_id: int
    team_id: int | None
    credential_id: int | None
    model_id: int | None
    price_set_id: int | None
    deployment_id: int | None
    model_version_id: int | None
    cost_pico: int | None
    status_code: int | None
    duration_ms: int | None
    ttft_ms: int | None
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    quarantine: int | None = None
    detail: dict[str, Any] | None = None


class StagedBatch(NamedTuple):
    """A batch to store, a column at a time: one list per column, one entry per event in the batch's order (its
    position). `keys` are event_key() digests (the first 16 bytes are the key), `quarantines` the codes of the
    reasons (QUARANTINE_CODES, None when rated) and `details` what each quarantined event keeps, by position.
    Columns, because the ingest path builds them with map() in C and packs each row with one struct call."""

    event_times: list[datetime]
    keys: list[bytes]
    source_ids: list[int]
    team_ids: list[int | None]
    credential_ids: list[int | None]
    model_ids: list[int | None]
    price_set_ids: list[int | None]
    deployment_ids: list[int | None]
    model_version_ids: list[int | None]
    costs_pico: list[int | None]
    status_codes: list[int | None]
    durations_ms: list[int | None]
    ttfts_ms: list[int | None]
    input_tokens: list[int | None]
    cached_input_tokens: list[int | None]
    cache_write_tokens: list[int | None]
    output_tokens: list[int | None]
    reasoning_tokens: list[int | None]
    quarantines: list[int | None]
    details: dict[int, dict[str, Any]]


def _or(column: list[Any], absent: int) -> list[Any]:
    """The column with None as `absent` (a value no event has: see _STAGING_TABLE)."""
    if None not in column:
        return column
    return [absent if value is None else value for value in column]


def _copy_data_python(batch: StagedBatch) -> bytes:
    """The whole binary COPY of the batch: each row one struct.pack over its fixed-width fields (mapped in C, no
    Python frame per row), about 1.9 µs a row on the machine of the benchmark's figures, where psycopg's write_row
    took about 3.5. The reference for portal/usage/_native.c's copy_rows, and what runs where it is not built."""
    size = len(batch.event_times)
    micros = map(floordiv, map(sub, batch.event_times, repeat(_PG_EPOCH, size)), repeat(_MICROSECOND, size))
    columns: list[Any] = [
        range(size),
        micros,
        batch.keys,
        batch.source_ids,
        *(_or(column, 0) for column in batch[3:9]),
        _or(batch.costs_pico, -1),
        *(_or(column, -1) for column in batch[10:19]),
    ]
    # Ids are serials (never 0); counts, costs, status codes and reason codes are never negative (the readers and
    # rating see to it): a -1 would be stored as absent, so it is refused rather than lost.
    if any(-1 in column for column in batch[9:19]):
        raise ValueError("a count, cost, status or code of -1 would be stored as absent")
    arguments: list[Any] = [repeat(20, size)]
    for field_size, column in zip(_FIELD_SIZES, columns, strict=True):
        arguments.append(repeat(field_size, size))
        arguments.append(column)
    return b"".join((_COPY_SIGNATURE, *map(_ROW.pack, *arguments), _COPY_TRAILER))


def _copy_data(batch: StagedBatch) -> bytes:
    """The binary COPY of the batch: by the C extension when it is built and takes the batch (every time in UTC,
    every value of its field's width), else by the Python twin, which also decides what is refused."""
    if native is not None:
        try:
            return native.copy_rows(tuple(batch[:19]))
        except (TypeError, ValueError, OverflowError):
            pass
    return _copy_data_python(batch)


def store_batch(
    cursor: Any,
    batch: StagedBatch,
    *,
    received_at: datetime,
    model_slugs: dict[int, str],
    client_ids: dict[int, str],
    racing: bool = False,
) -> set[int]:
    """Store the events not stored yet, in the caller's transaction, with their rollup deltas; returns the
    positions (indexes into the batch) that were already stored. `model_slugs` and `client_ids` label the deltas.
    Raises IntegrityError (a unique violation) when a concurrent transaction committed some of the same events
    while this one stored them: the caller retries its transaction with `racing`, which waits for such copies and
    skips them (see _store_sql)."""
    data = _copy_data(batch)
    # Into the month's partition itself when the batch falls in one month (nearly always): routing each row through
    # the partitioned table costs about 0.4 µs a row (measured: 200,000 rows, 0.60 s through it, 0.50 s direct).
    first, last = month_start(min(batch.event_times)), month_start(max(batch.event_times))
    statement = _store_sql(partition_name(first) if first == last else None, racing=racing)
    cursor.execute(_STAGING_TABLE)
    with cursor.cursor.copy(_COPY_STAGING) as copy:
        copy.write(data)
    positions = sorted(batch.details)
    parameters: dict[str, Any] = {
        "received_at": received_at,
        "detail_positions": positions,
        "details": [json.dumps(batch.details[position]) for position in positions],
    }
    if racing:
        parameters["staged"] = len(batch.event_times)
    cursor.execute(statement, parameters)
    stored_before = {position for (position,) in cursor.fetchall()}
    _insert_deltas(cursor, batch_deltas(batch, stored_before), model_slugs=model_slugs, client_ids=client_ids)
    return stored_before


# --- dictionaries ----------------------------------------------------------------------------------------------
# Sources and price sets are few; each batch resolves its handful in the store's transaction (no process cache to
# go stale), adding new ones (a second batch adding the same one waits on the unique index and finds it).


def source_ids(cursor: Any, names: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(names))
    cursor.execute("SELECT name, id FROM usage_source WHERE name = ANY(%s)", [wanted])
    known = dict(cursor.fetchall())
    missing = [name for name in wanted if name not in known]
    if missing:
        cursor.execute(
            "INSERT INTO usage_source (name) SELECT unnest(%s::text[]) ORDER BY 1 ON CONFLICT (name) DO NOTHING",
            [missing],
        )
        cursor.execute("SELECT name, id FROM usage_source WHERE name = ANY(%s)", [missing])
        known.update(cursor.fetchall())
    return known


def _array_literal(price_ids: tuple[int, ...]) -> str:
    return "{" + ",".join(str(price_id) for price_id in price_ids) + "}"


def price_set_ids(cursor: Any, sets: Iterable[tuple[int, ...]]) -> dict[tuple[int, ...], int]:
    """The id of each set of price ids (sorted tuples), adding the new ones."""
    wanted = sorted(set(sets))
    select = "SELECT s.price_ids, s.id FROM usage_price_set s JOIN unnest(%s::text[]) AS p ON s.price_ids = p::bigint[]"
    cursor.execute(select, [[_array_literal(price_ids) for price_ids in wanted]])
    known = {tuple(price_ids): set_id for price_ids, set_id in cursor.fetchall()}
    missing = [_array_literal(price_ids) for price_ids in wanted if price_ids not in known]
    if missing:
        cursor.execute(
            "INSERT INTO usage_price_set (price_ids) SELECT p::bigint[] FROM unnest(%s::text[]) AS p ORDER BY 1 "
            "ON CONFLICT (price_ids) DO NOTHING",
            [missing],
        )
        cursor.execute(select, [missing])
        known.update({tuple(price_ids): set_id for price_ids, set_id in cursor.fetchall()})
    return known


def price_sets(set_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, price_ids FROM usage_price_set WHERE id = ANY(%s)", [sorted(set(set_ids))])
        return {set_id: tuple(price_ids) for set_id, price_ids in cursor.fetchall()}


# --- re-rating -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatedEvent:
    event_time: datetime
    key: str
    team_id: int
    credential_id: int
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_pico: int
    price_set_id: int


_RERATE_SCAN_SQL = """
SELECT event_time, event_key::text, team_id, credential_id, input_tokens, cached_input_tokens, cache_write_tokens,
    output_tokens, reasoning_tokens, cost_pico, price_set_id
FROM usage_event
WHERE event_time >= %s AND event_time < %s AND (event_time, event_key) > (%s, %s::uuid)
    AND model_id = %s AND quarantine IS NULL
ORDER BY event_time, event_key
LIMIT %s
"""


def rated_events(
    cursor: Any, *, model_id: int, since: datetime, until: datetime, after: tuple[datetime, str], limit: int
) -> list[RatedEvent]:
    """One page of a model's rated events in [since, until), in key order after `after`."""
    cursor.execute(_RERATE_SCAN_SQL, [since, until, after[0], after[1], model_id, limit])
    return [RatedEvent(*row) for row in cursor.fetchall()]


# A change applies only if the row still holds the cost and prices it was read with (a concurrent re-rate of the
# same rows cannot count twice); the compensating delta is the difference, over the rows actually changed.
_RERATE_APPLY_SQL = _with_histograms(
    """
WITH changed AS (
    UPDATE usage_event e SET cost_pico = u.cost_pico, price_set_id = u.price_set_id
    FROM unnest(%s::timestamptz[], %s::uuid[], %s::bigint[], %s::integer[], %s::bigint[], %s::integer[])
        AS u(event_time, event_key, old_cost_pico, old_price_set_id, cost_pico, price_set_id)
    WHERE e.event_time = u.event_time AND e.event_key = u.event_key AND e.quarantine IS NULL
        AND e.cost_pico = u.old_cost_pico AND e.price_set_id = u.old_price_set_id
    RETURNING e.event_time, e.team_id, e.model_id, e.credential_id, e.deployment_id, u.cost_pico - u.old_cost_pico
        AS difference
), deltas AS (
    INSERT INTO usage_rollup_delta (hour, team_id, model_id, credential_id, deployment_id, model_slug, client_id, requests, failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_pico, last_event_at, latency_buckets, ttft_buckets)
    SELECT date_bin('1 hour', e.event_time, __UTC_EPOCH__), e.team_id, e.model_id, e.credential_id, e.deployment_id, '', '', 0, 0, 0, 0, 0, 0, 0, 0, sum(e.difference), NULL, NULL, NULL
    FROM changed e GROUP BY date_bin('1 hour', e.event_time, __UTC_EPOCH__), e.team_id, e.model_id, e.credential_id, e.deployment_id
)
SELECT count(*) FROM changed
"""
)


def rerate_apply(cursor: Any, changes: Sequence[tuple[RatedEvent, int, int]]) -> int:
    """Store new (cost, price set) of events read by `rated_events`, with compensating deltas; how many changed."""
    if not changes:
        return 0
    cursor.execute(
        _RERATE_APPLY_SQL,
        [
            [event.event_time for event, _, _ in changes],
            [event.key for event, _, _ in changes],
            [event.cost_pico for event, _, _ in changes],
            [event.price_set_id for event, _, _ in changes],
            [cost for _, cost, _ in changes],
            [price_set for _, _, price_set in changes],
        ],
    )
    return int(cursor.fetchone()[0])


# --- quarantine ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedEvent:
    event_time: datetime
    key: str
    source: str
    event_id: str
    client_id: str
    model_names: tuple[str, ...]
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None


_QUARANTINE_SCAN_SQL = """
SELECT e.event_time, e.event_key::text, d.source, d.event_id, d.client_id, d.model_names, e.input_tokens,
    e.cached_input_tokens, e.cache_write_tokens, e.output_tokens, e.reasoning_tokens
FROM usage_event e
JOIN usage_quarantined_event d ON d.event_time = e.event_time AND d.event_key = e.event_key
WHERE e.quarantine IS NOT NULL AND e.event_time >= %s AND (e.event_time, e.event_key) > (%s, %s::uuid)
ORDER BY e.event_time, e.event_key
LIMIT %s
"""


def quarantined_page(*, since: datetime, after: tuple[datetime, str], limit: int) -> list[QuarantinedEvent]:
    with connection.cursor() as cursor:
        cursor.execute(_QUARANTINE_SCAN_SQL, [since, after[0], after[1], limit])
        return [
            QuarantinedEvent(time, key, source, event_id, client_id, tuple(names or ()), *tokens)
            for time, key, source, event_id, client_id, names, *tokens in cursor.fetchall()
        ]


# Released only while still quarantined (a concurrent release cannot count an event twice); the delta adds the
# released events whole, as ingestion would have.
_RELEASE_SQL = _with_histograms(
    """
WITH released AS (
    UPDATE usage_event e SET quarantine = NULL, team_id = u.team_id, credential_id = u.credential_id,
        model_id = u.model_id, deployment_id = u.deployment_id, model_version_id = u.model_version_id,
        cost_pico = u.cost_pico, price_set_id = u.price_set_id
    FROM unnest(%(times)s::timestamptz[], %(keys)s::uuid[], %(teams)s::bigint[], %(credentials)s::bigint[],
        %(models)s::bigint[], %(deployments)s::bigint[], %(versions)s::bigint[], %(costs)s::bigint[],
        %(price_sets)s::integer[])
        AS u(event_time, event_key, team_id, credential_id, model_id, deployment_id, model_version_id, cost_pico,
             price_set_id)
    WHERE e.event_time = u.event_time AND e.event_key = u.event_key AND e.quarantine IS NOT NULL
    RETURNING e.*
), deltas AS (
    INSERT INTO usage_rollup_delta (hour, team_id, model_id, credential_id, deployment_id, model_slug, client_id, requests, failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_pico, last_event_at, latency_buckets, ttft_buckets)
    SELECT date_bin('1 hour', e.event_time, __UTC_EPOCH__), e.team_id, e.model_id, e.credential_id, e.deployment_id, coalesce(max(m.slug), ''), coalesce(max(c.client_id), ''), count(*), count(*) FILTER (WHERE e.status_code >= 400),
    count(*) FILTER (WHERE e.input_tokens IS NULL AND e.output_tokens IS NULL),
    coalesce(sum(e.input_tokens), 0), coalesce(sum(e.cached_input_tokens), 0), coalesce(sum(e.cache_write_tokens), 0),
    coalesce(sum(e.output_tokens), 0), coalesce(sum(e.reasoning_tokens), 0), sum(e.cost_pico), max(e.event_time),
    __LATENCY_HISTOGRAM__, __TTFT_HISTOGRAM__
    FROM released e
    LEFT JOIN unnest(%(model_ids)s::bigint[], %(model_slugs)s::text[]) AS m(id, slug) ON m.id = e.model_id
    LEFT JOIN unnest(%(credential_ids)s::bigint[], %(client_ids)s::text[]) AS c(id, client_id)
        ON c.id = e.credential_id
    GROUP BY date_bin('1 hour', e.event_time, __UTC_EPOCH__), e.team_id, e.model_id, e.credential_id, e.deployment_id
)
SELECT count(*) FROM released
"""
)


def release(
    cursor: Any,
    events: Sequence[StoredEvent],
    *,
    model_slugs: dict[int, str],
    client_ids: dict[int, str],
) -> int:
    """Mark quarantined events rated with their new attribution and cost, with their deltas; how many changed."""
    if not events:
        return 0
    cursor.execute(
        _RELEASE_SQL,
        {
            "times": [event.event_time for event in events],
            "keys": [event.key.hex() for event in events],
            "teams": [event.team_id for event in events],
            "credentials": [event.credential_id for event in events],
            "models": [event.model_id for event in events],
            "deployments": [event.deployment_id for event in events],
            "versions": [event.model_version_id for event in events],
            "costs": [event.cost_pico for event in events],
            "price_sets": [event.price_set_id for event in events],
            "model_ids": list(model_slugs),
            "model_slugs": list(model_slugs.values()),
            "credential_ids": list(client_ids),
            "client_ids": list(client_ids.values()),
        },
    )
    return int(cursor.fetchone()[0])


def quarantined_count(*, since: datetime) -> int:
    """Events since `since` held in quarantine (the partial index on quarantined events, not a scan)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_event WHERE quarantine IS NOT NULL AND event_time >= %s", [since])
        return int(cursor.fetchone()[0])


def quarantined_listing(*, since: datetime, limit: int) -> list[dict[str, Any]]:
    """Newest quarantined events first, as admins read them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.event_time, d.source, d.event_id, d.client_id, coalesce(d.model_names[1], '') AS model_name, "
            "d.reason, d.received_at FROM usage_quarantined_event d JOIN usage_event e "
            "ON e.event_time = d.event_time AND e.event_key = d.event_key "
            "WHERE e.quarantine IS NOT NULL AND d.event_time >= %s ORDER BY d.event_time DESC LIMIT %s",
            [since, limit],
        )
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


# --- reads for tests, the benchmark and capacity planning --------------------------------------------------------


def raw_totals(*, team_id: int | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Counts and cost (pico-units) of rated events straight from the raw table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_pico), 0) FROM usage_event WHERE quarantine IS NULL "
            "AND (%s::bigint IS NULL OR team_id = %s) AND (%s::timestamptz IS NULL OR event_time >= %s)",
            [team_id, team_id, since, since],
        )
        requests, input_tokens, output_tokens, cost_pico = cursor.fetchone()
    return {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens, "cost_pico": cost_pico}


_STORED_EVENTS_SQL = """
SELECT e.event_time, e.event_key::text, s.name, e.quarantine, e.team_id, e.credential_id, e.model_id, e.deployment_id,
    e.model_version_id, e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens,
    e.reasoning_tokens, e.cost_pico, coalesce(p.price_ids, '{}') AS price_ids, e.status_code, e.duration_ms, e.ttft_ms
FROM usage_event e JOIN usage_source s ON s.id = e.source_id LEFT JOIN usage_price_set p ON p.id = e.price_set_id
WHERE %s
ORDER BY e.event_time, e.event_key
"""


def stored_events(*, where: str = "true", parameters: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Stored events with their source, state and cost, oldest first (tests that follow events end to end)."""
    with connection.cursor() as cursor:
        cursor.execute(_STORED_EVENTS_SQL.replace("%s", where, 1), list(parameters))
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["source"] = row.pop("name")
        code = row.pop("quarantine")
        row["state"] = "rated" if code is None else "quarantined"
        row["reason"] = "" if code is None else QUARANTINE_REASONS[code - 1]
        row["cost"] = None if row["cost_pico"] is None else Decimal(row["cost_pico"]).scaleb(-12)
    return rows


def stored_event(*, source: str, event_id: str) -> dict[str, Any] | None:
    """One stored event found by what its producer knows of it (source and id), with its cost and price ids."""
    key = event_key(source, event_id).hex()
    rows = list(stored_events(where="e.event_key = %s::uuid", parameters=[key]))
    return rows[0] if rows else None


def bytes_per_event() -> tuple[int, int, int]:
    """(events, heap bytes, index bytes) of the raw table's partitions: what one stored event costs on disk."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(pg_table_size(c.oid)), 0), "
            "coalesce(sum(pg_indexes_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [RAW_EVENT_TABLE],
        )
        heap, indexes = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM usage_event")
        events = cursor.fetchone()[0]
    return int(events), int(heap), int(indexes)
