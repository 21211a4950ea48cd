"""Usage ingestion benchmark: events through the HTTP endpoint under gunicorn until the rollups reflect them,
against a plain COPY of the same rows as the ceiling; and a monthly cost report over 10M stored events.

Run with `make bench` (or `pytest tests/bench/test_usage_ingest.py -s -o addopts=""`). Sizes come from the
environment so it can be tried small first:
  USAGE_BENCH_EVENTS=1000000         unique events sent over HTTP (10 percent more are sent again as duplicates)
  USAGE_BENCH_REPORT_EVENTS=10000000 events stored for the report latency
  USAGE_BENCH_CLIENTS=4              concurrent HTTP clients
  USAGE_BENCH_WORKERS=3              gunicorn worker processes
  USAGE_BENCH_BATCH=1000             events per request
Use a database of its own (DATABASE_URL=.../portal_usage_bench): pytest-django creates test_<name>.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from portal.api.services import api_token_issue
from portal.gateway import services as gateway_services
from portal.usage import services as usage_services
from portal.usage.partitions import add_months, month_start, next_month, partition_ensure
from tests.factories import (
    ManagedVersionFactory,
    MembershipFactory,
    PriceFactory,
    ServicePrincipalFactory,
    TeamFactory,
    UserFactory,
)

EVENTS = int(os.environ.get("USAGE_BENCH_EVENTS", "1000000"))
REPORT_EVENTS = int(os.environ.get("USAGE_BENCH_REPORT_EVENTS", "10000000"))
CLIENTS = int(os.environ.get("USAGE_BENCH_CLIENTS", "4"))
WORKERS = int(os.environ.get("USAGE_BENCH_WORKERS", "3"))
BATCH = int(os.environ.get("USAGE_BENCH_BATCH", "1000"))
DUPLICATE_SHARE = 0.10
TEAMS = 8
CREDENTIALS_PER_TEAM = 4
SOURCE = "aigw://bench-eu1/envoy-ai-gateway"
PRICES = {"input": Decimal("2.500000"), "cached_input": Decimal("1.250000"), "output": Decimal("10.000000")}
ROOT = Path(__file__).resolve().parents[2]


def _tokens(index: int) -> tuple[int, int, int]:
    """Deterministic token counts of event `index`: input, cached input (a part of it), output."""
    input_tokens = 100 + (index * 7919) % 5000
    cached = input_tokens // 4 if index % 4 == 0 else 0
    output_tokens = 10 + (index * 104729) % 800
    return input_tokens, cached, output_tokens


def _cost(input_tokens: int, cached: int, output_tokens: int) -> Decimal:
    return (
        (input_tokens - cached) * PRICES["input"] + cached * PRICES["cached_input"] + output_tokens * PRICES["output"]
    ) / Decimal(1_000_000)


def _event(index: int, client_ids: list[str], base: datetime) -> dict[str, Any]:
    input_tokens, cached, output_tokens = _tokens(index)
    client_id = client_ids[index % len(client_ids)]
    moment = base + timedelta(milliseconds=index * 37 % (20 * 3600 * 1000))
    return {
        "specversion": "1.0",
        "type": "ai.gateway.llm.usage.v1",
        "source": SOURCE,
        "id": f"bench-{index:09d}",
        "time": moment.isoformat().replace("+00:00", "Z"),
        "subject": client_id,
        "data": {
            "request_id": f"req-{index}",
            "credential_id": client_id,
            "model_requested": "bench-model",
            "route": "httproute/genai/llm/rule/0",
            "usage": {
                "input_tokens": input_tokens,
                "cached_input_tokens": cached,
                "cache_creation_input_tokens": 0,
                "output_tokens": output_tokens,
                "reasoning_tokens": None,
            },
            "status_code": 200,
            "duration_ms": 900,
        },
    }


def _client_run(
    worker: int, port: int, token: str, client_ids: list[str], base_iso: str, start: Any, results: Any
) -> None:
    """One concurrent producer: its share of the events plus its share of duplicates, gzip'd batches,
    built before the start signal so the clock measures sending, not building."""
    base = datetime.fromisoformat(base_iso)
    mine = list(range(worker, EVENTS, CLIENTS))
    rng = random.Random(worker)
    duplicates = rng.sample(range(EVENTS), int(len(mine) * DUPLICATE_SHARE)) if EVENTS else []
    indexes = mine + duplicates
    rng.shuffle(indexes)
    bodies = [
        gzip.compress(json.dumps([_event(i, client_ids, base) for i in indexes[at : at + BATCH]]).encode(), 3)
        for at in range(0, len(indexes), BATCH)
    ]
    start.wait()
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "quarantined": 0, "requests": 0, "retries": 0}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/cloudevents-batch+json",
        "Content-Encoding": "gzip",
    }
    for body in bodies:
        while True:
            try:
                conn.request("POST", "/api/v1/usage/events", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                totals["retries"] += 1
                continue
            if response.status in (429, 503):  # back-pressure: the same batch again, blindly
                totals["retries"] += 1
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            if response.status != 200:
                raise AssertionError(f"HTTP {response.status}: {payload[:300]!r}")
            answer = json.loads(payload)
            for key in ("accepted", "duplicates", "rejected", "quarantined"):
                totals[key] += answer[key]
            totals["requests"] += 1
            break
    results.put(totals)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gunicorn(port: int) -> subprocess.Popen[bytes]:
    database = connection.settings_dict
    url = (
        f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"
    )
    if database.get("PASSWORD"):
        url = url.replace("@", f":{database['PASSWORD']}@", 1)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.RESOLVED_REDIS_URL,
        "PORTAL_EMBEDDED_SERVICES": "false",
        "PORTAL_API_RATE_LIMIT": "10000000/minute",
        "PORTAL_LOG_LEVEL": "WARNING",
        "PORTAL_CACHE_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "portal.wsgi:application",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "300",
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            probe.request("GET", "/healthz")
            if probe.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise AssertionError("gunicorn did not start")


class _RollupLoop(threading.Thread):
    """Stands in for the beat-driven rollup task: recomputes dirty buckets as they appear."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if usage_services.usage_rollups_recompute() == 0:
                    time.sleep(0.5)
        finally:
            connection.close()


def _rollup_totals(team_ids: list[int]) -> tuple[int, int, int, Decimal]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost), 0) FROM usage_daily WHERE team_id = ANY(%s)",
            [team_ids],
        )
        requests, input_tokens, output_tokens, cost = cursor.fetchone()
    return int(requests), int(input_tokens), int(output_tokens), cost


def _copy_ceiling(client_ids: list[str], base: datetime, ids: dict[str, tuple[int, int]], model_id: int) -> float:
    """The same unique rows (already rated) COPY'd into an unindexed, unpartitioned table: the ceiling."""
    buffer = io.StringIO()
    for index in range(EVENTS):
        event = _event(index, client_ids, base)
        credential_id, team_id = ids[event["subject"]]
        input_tokens, cached, output_tokens = _tokens(index)
        buffer.write(
            f"{event['time']}\t{SOURCE}\t{event['id']}\t{base.isoformat()}\t{event['subject']}\t{credential_id}\t"
            f"{team_id}\tbench-model\t{model_id}\tbench-model\t\t{event['data']['route']}\t200\t900\t{input_tokens}\t"
            f"{cached}\t0\t{output_tokens}\t\\N\t{_cost(input_tokens, cached, output_tokens)}\t{{}}\trated\t\t\\N\n"
        )
    data = buffer.getvalue().encode()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_copy_ceiling")
        cursor.execute(
            "CREATE UNLOGGED TABLE bench_copy_ceiling (LIKE usage_event INCLUDING DEFAULTS)"
            if os.environ.get("USAGE_BENCH_UNLOGGED")
            else "CREATE TABLE bench_copy_ceiling (LIKE usage_event INCLUDING DEFAULTS)"
        )
        started = time.perf_counter()
        with cursor.cursor.copy("COPY bench_copy_ceiling FROM STDIN") as copy:
            for at in range(0, len(data), 1 << 20):
                copy.write(data[at : at + (1 << 20)])
        elapsed = time.perf_counter() - started
        cursor.execute("SELECT count(*) FROM bench_copy_ceiling")
        assert cursor.fetchone()[0] == EVENTS
        cursor.execute("DROP TABLE bench_copy_ceiling")
    return elapsed


def _bulk_load_month(team_ids: list[int], ids: list[tuple[int, int, str]], model_id: int, month: Any) -> float:
    """REPORT_EVENTS rated events spread over one whole month, loaded server-side in bulk (no HTTP)."""
    partition_ensure(month)
    begin = datetime(month.year, month.month, 1, tzinfo=UTC)
    seconds = int((datetime(next_month(month).year, next_month(month).month, 1, tzinfo=UTC) - begin).total_seconds())
    credentials = [credential for credential, _, _ in ids]
    teams = [team for _, team, _ in ids]
    clients = [client for _, _, client in ids]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        step = 1_000_000
        for low in range(0, REPORT_EVENTS, step):
            high = min(low + step, REPORT_EVENTS) - 1
            cursor.execute(
                """
                INSERT INTO usage_event (event_time, source, event_id, received_at, client_id, credential_id, team_id,
                    model_name, model_id, model_slug, status_code, input_tokens, cached_input_tokens,
                    cache_write_tokens, output_tokens, cost, price_ids, state)
                SELECT %s::timestamptz + make_interval(secs => (g::bigint * 7919) %% %s), 'aigw://bulk', 'bulk-' || g,
                    now(), (%s::text[])[1 + g %% %s], (%s::bigint[])[1 + g %% %s], (%s::bigint[])[1 + g %% %s],
                    'bench-model', %s, 'bench-model', 200, 1000 + g %% 500, 0, 0, 100 + g %% 50,
                    ((1000 + g %% 500) * 2.5 + (100 + g %% 50) * 10) / 1000000.0, '{}', 'rated'
                FROM generate_series(%s::bigint, %s::bigint) AS g
                """,
                [begin, seconds, clients, len(ids), credentials, len(ids), teams, len(ids), model_id, low, high],
            )
        cursor.execute(
            "INSERT INTO usage_dirty_hour (hour, team_id) SELECT DISTINCT date_trunc('hour', event_time), team_id "
            "FROM usage_event WHERE source = 'aigw://bulk' ON CONFLICT DO NOTHING"
        )
    return time.perf_counter() - started


def _measure_report(port: int, token: str, team: str | None, month: Any) -> None:
    last = next_month(month) - timedelta(days=1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/api/v1/teams/{team}/costs" if team else "/api/v1/costs"
    for group_by in ("day", "model", "credential") if team else ("team", "day"):
        samples = []
        body: dict[str, Any] = {}
        for round_index in range(25):
            started = time.perf_counter()
            conn.request(
                "GET",
                f"{path}?from={month.isoformat()}&to={last.isoformat()}&group_by={group_by}",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            payload = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status == 200, payload[:300]
            if round_index >= 5:
                samples.append(elapsed)
            body = json.loads(payload)
        samples.sort()
        print(
            f"  cost report {team or 'all teams'} {month:%Y-%m} group_by={group_by}: median {statistics.median(samples):.1f} ms, "
            f"p95 {samples[int(len(samples) * 0.95) - 1]:.1f} ms over {len(samples)} requests "
            f"({body['totals']['requests']} requests, {body['totals']['token_cost']} {body['currency']})"
        )


@pytest.mark.django_db(transaction=True)
def test_bench_usage_ingest_end_to_end() -> None:
    version = ManagedVersionFactory(
        model__slug="bench-model", served_model_name="bench-model", provider_model_id="bench-x"
    )
    for usage_type, price in PRICES.items():
        PriceFactory(
            model=version.model,
            usage_type=usage_type,
            price_per_million=price,
            effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        )
    person = UserFactory()
    teams = [TeamFactory(slug=f"bench-{n}") for n in range(TEAMS)]
    for team in teams:
        MembershipFactory(team=team, user=person, role="viewer")
    issued = [
        gateway_services.credential_issue(actor=None, team=team, name=f"key-{n}")
        for team in teams
        for n in range(CREDENTIALS_PER_TEAM)
    ]
    client_ids = [credential.client_id for credential in issued]
    ids = {credential.client_id: (credential.credential_id, credential.credential.team_id) for credential in issued}
    collector = api_token_issue(actor=None, principal=ServicePrincipalFactory(), name="bench", scopes=["usage:write"])
    usage_services.collector_source_bind(actor=None, token_id=collector.token.pk, source_prefix="aigw://")
    reader = api_token_issue(actor=None, principal=person, name="reader", scopes=[]).plaintext
    staff = UserFactory(username="bench-admin", backstage_ref=None, is_staff=True)
    platform_admin = api_token_issue(actor=None, principal=staff, name="admin", scopes=[]).plaintext
    team_ids = [team.pk for team in teams]
    base = (datetime.now(UTC) - timedelta(hours=22)).replace(microsecond=0)
    for month in {month_start(base), month_start(datetime.now(UTC))}:
        partition_ensure(month)

    expected = [0, 0, 0, Decimal(0)]
    for index in range(EVENTS):
        input_tokens, cached, output_tokens = _tokens(index)
        expected[0] += 1
        expected[1] += input_tokens
        expected[2] += output_tokens
        expected[3] += _cost(input_tokens, cached, output_tokens)

    port = _free_port()
    server = _gunicorn(port)
    rollup_loop = _RollupLoop()
    try:
        context = multiprocessing.get_context("fork")
        start = context.Event()
        results = context.Queue()
        connection.close()  # forked producers must not share the parent's database socket
        clients = [
            context.Process(
                target=_client_run,
                args=(worker, port, collector.plaintext, client_ids, base.isoformat(), start, results),
            )
            for worker in range(CLIENTS)
        ]
        for process in clients:
            process.start()
        time.sleep(2 + EVENTS / 200_000)  # let every producer build its batches
        rollup_loop.start()
        started = time.perf_counter()
        start.set()
        totals = [results.get(timeout=3600) for _ in clients]
        sent_at = time.perf_counter() - started
        for process in clients:
            process.join()
        while _rollup_totals(team_ids) != tuple(expected):
            if time.perf_counter() - started > 3600:
                raise AssertionError(
                    f"rollups never reached the expected totals: {_rollup_totals(team_ids)} != {expected}"
                )
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        rollup_loop.stop.set()
    rollup_loop.join()

    accepted = sum(total["accepted"] for total in totals)
    duplicates = sum(total["duplicates"] for total in totals)
    sent = accepted + duplicates + sum(total["rejected"] for total in totals)
    assert accepted == EVENTS
    assert sum(total["rejected"] for total in totals) == 0
    assert sum(total["quarantined"] for total in totals) == 0
    assert _rollup_totals(team_ids) == tuple(expected)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(cost) FROM usage_event WHERE source = %s", [SOURCE])
        stored, stored_cost = cursor.fetchone()
    assert (stored, stored_cost) == (EVENTS, expected[3])

    copy_seconds = _copy_ceiling(client_ids, base, ids, version.model_id)
    end_to_end = EVENTS / elapsed
    ceiling = EVENTS / copy_seconds
    print(
        f"\nusage ingest: {sent} events sent ({EVENTS} unique + {duplicates} duplicates) by {CLIENTS} clients in "
        f"{sum(total['requests'] for total in totals)} gzip'd batches of {BATCH} to gunicorn ({WORKERS} workers); "
        f"{sum(total['retries'] for total in totals)} retries"
        f"\n  all answered in {sent_at:.1f} s ({sent / sent_at:,.0f} events/s received)"
        f"\n  end to end until rollups reflect them exactly: {elapsed:.1f} s = {end_to_end:,.0f} unique events/s "
        f"({sent / elapsed:,.0f} events/s including duplicates)"
        f"\n  totals exact: {expected[0]} requests, {expected[1]} input and {expected[2]} output tokens, "
        f"{expected[3]} {settings.PORTAL_CURRENCY}"
        f"\n  ceiling, plain COPY of the same {EVENTS} rows into an unindexed table: {copy_seconds:.1f} s = "
        f"{ceiling:,.0f} rows/s; end to end is {end_to_end / ceiling:.1%} of it (ratio 1:{ceiling / end_to_end:.1f})"
    )

    report_month = add_months(month_start(datetime.now(UTC)), -1)
    load_seconds = _bulk_load_month(team_ids, [(*ids[c], c) for c in client_ids], version.model_id, report_month)
    started = time.perf_counter()
    recomputed = usage_services.usage_rollups_recompute(batch_size=2000, max_batches=100_000)
    rollup_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_event")
        stored_total = cursor.fetchone()[0]
    print(
        f"  report data: {REPORT_EVENTS} events for {report_month:%Y-%m} bulk-loaded in {load_seconds:.1f} s; "
        f"{recomputed} hourly buckets rolled up in {rollup_seconds:.1f} s; {stored_total} events stored in all"
    )
    try:
        _measure_report(port, reader, teams[0].slug, report_month)
        _measure_report(port, platform_admin, None, report_month)
    finally:
        server.terminate()
        server.wait(timeout=30)
