"""Usage ingestion benchmark: both wire formats (OTLP/HTTP protobuf, then CloudEvents) through two gunicorn servers on
two ports fed by the same load, until the cost report is exact; against a COPY of the same rows as the portal stores
them (the lean ceiling), with the bytes one stored event takes.

Run with `make bench` (or `pytest tests/bench/test_usage_ingest.py -s -o addopts=""`). The load is the issue's: 12
teams, 36 keys, 4 models whose prices change in the middle of the window, cached, cache-write and reasoning tokens, 2
percent failed requests without counts, 10 percent exact duplicates (each batch repeats some of the one before, as a
collector retrying a partly answered export does), 2 percent of batches replayed whole by a second client at the same
time, gzip. Each collector sends its events in time order, as a collector's queue drains. Sizes from the environment:
  USAGE_BENCH_EVENTS=200000   unique events per wire format
  USAGE_BENCH_CLIENTS=4       concurrent producers (each alternates between the two servers)
  USAGE_BENCH_WORKERS=2       gunicorn workers per server
  USAGE_BENCH_BATCH=5000      events per request (k8s/gateway-telemetry/collector.yaml sends at most 5,000 an export;
                              a batch costs about 10 ms of CPU whatever its size, so smaller batches cost more each)
Use a database of its own (DATABASE_URL=.../portal_usage_bench): pytest-django creates test_<name>. It fails if any
total is not exact. The last line is `ratio_to_copy=<x>` of the CloudEvents run.
"""

from __future__ import annotations

import gc
import gzip
import http.client
import io
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from portal.gateway import services as gateway_services
from portal.tokens.services import api_token_issue
from portal.usage import services as usage_services
from portal.usage import store
from portal.usage.partitions import month_start, partition_ensure
from tests.factories import ManagedVersionFactory, PriceFactory, ServicePrincipalFactory, TeamFactory, UserFactory

EVENTS = int(os.environ.get("USAGE_BENCH_EVENTS", "200000"))
CLIENTS = int(os.environ.get("USAGE_BENCH_CLIENTS", "4"))
WORKERS = int(os.environ.get("USAGE_BENCH_WORKERS", "2"))
BATCH = int(os.environ.get("USAGE_BENCH_BATCH", "5000"))
SERVERS = 2
TEAMS = 12
KEYS_PER_TEAM = 3
MODELS = 4
DUPLICATE_SHARE = 0.10
REPLAYED_BATCH_SHARE = 0.02
WINDOW = timedelta(hours=6)
ROOT = Path(__file__).resolve().parents[2]
# Per 1M tokens, before and after the change in the middle of the window; the last model prices reasoning apart.
PRICES = [
    {
        "input": (Decimal("2.500000") * (m + 1), Decimal("2.000000") * (m + 1)),
        "cached_input": (Decimal("1.250000") * (m + 1), Decimal("1.000000") * (m + 1)),
        "cache_write": (Decimal("3.125000") * (m + 1), Decimal("2.500000") * (m + 1)),
        "output": (Decimal("10.000000") * (m + 1), Decimal("8.000000") * (m + 1)),
        **({"reasoning": (Decimal("12.000000"), Decimal("11.000000"))} if m == MODELS - 1 else {}),
    }
    for m in range(MODELS)
]


@dataclass(frozen=True)
class Event:
    index: int
    key: int
    model: int
    at: datetime
    status: int
    input_tokens: int | None
    cached: int | None
    cache_write: int | None
    output_tokens: int | None
    reasoning: int | None


def _event(index: int, base: datetime) -> Event:
    """Event `index` of the load, deterministic: every producer and the expected totals compute the same."""
    at = base + WINDOW * index / EVENTS
    model = (index // 7) % MODELS
    if index % 50 == 0:  # 2 percent failed requests: the gateway logs them without token counts
        return Event(index, index % (TEAMS * KEYS_PER_TEAM), model, at, 503, None, None, None, None, None)
    input_tokens = 200 + (index * 7919) % 4000
    cached = input_tokens // 3 if index % 3 == 0 else 0
    cache_write = input_tokens // 5 if index % 5 == 1 else 0
    output_tokens = 20 + (index * 104729) % 900
    reasoning = output_tokens // 2 if model == MODELS - 1 and index % 2 == 0 else None
    key = index % (TEAMS * KEYS_PER_TEAM)
    return Event(index, key, model, at, 200, input_tokens, cached, cache_write, output_tokens, reasoning)


def _cost(event: Event, change: datetime) -> Decimal:
    """The price list applied by hand (the metering reference's rules), independently of the portal's rating."""
    if event.input_tokens is None:
        return Decimal(0)
    period = 0 if event.at < change else 1
    prices = {usage_type: values[period] for usage_type, values in PRICES[event.model].items()}
    cached, cache_write, reasoning = event.cached or 0, event.cache_write or 0, event.reasoning or 0
    output = event.output_tokens or 0
    total = (
        (event.input_tokens - cached - cache_write) * prices["input"]
        + cached * prices["cached_input"]
        + cache_write * prices["cache_write"]
    )
    if "reasoning" in prices and reasoning:
        total += (output - reasoning) * prices["output"] + reasoning * prices["reasoning"]
    else:
        total += output * prices["output"]
    return total / Decimal(1_000_000)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)  # as Envoy's access log writes an absent metadata value


def _cloudevents_body(events: list[Event], client_ids: list[str], source: str) -> bytes:
    return json.dumps(
        [
            {
                "specversion": "1.0",
                "type": "ai.gateway.llm.usage.v1",
                "source": source,
                "id": f"bench-{event.index:09d}",
                "time": event.at.isoformat().replace("+00:00", "Z"),
                "subject": client_ids[event.key],
                "data": {
                    "request_id": f"req-{event.index}",
                    "credential_id": client_ids[event.key],
                    "model_requested": f"bench-model-{event.model}",
                    "route": "httproute/genai/llm/rule/0",
                    "usage": {
                        "input_tokens": event.input_tokens,
                        "cached_input_tokens": event.cached,
                        "cache_creation_input_tokens": event.cache_write,
                        "output_tokens": event.output_tokens,
                        "reasoning_tokens": event.reasoning,
                    },
                    "status_code": event.status,
                    "duration_ms": 100 + event.index % 3000,
                    "time_to_first_token_ms": 30 + event.index % 500,
                },
            }
            for event in events
        ]
    ).encode()


def _otlp_body(events: list[Event], client_ids: list[str], source: str) -> bytes:
    """An export as the OpenTelemetry collector sends the gateway's access log: string attributes, '-' for absent."""

    def attribute(key: str, value: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    records = [
        logs_pb2.LogRecord(
            time_unix_nano=int(event.at.timestamp() * 1e9),
            attributes=[
                attribute("start_time", event.at.isoformat().replace("+00:00", "Z")),
                attribute("request_id", f"req-{event.index}"),
                attribute("credential_id", client_ids[event.key]),
                attribute("route", "httproute/genai/llm-route/rule/0"),
                attribute("backend", "genai/openai"),
                attribute("model_requested", f"bench-model-{event.model}"),
                attribute("model_override", "-"),
                attribute("model_response", "-"),
                attribute("input_tokens", _number(event.input_tokens)),
                attribute("cached_input_tokens", _number(event.cached)),
                attribute("cache_creation_input_tokens", _number(event.cache_write)),
                attribute("output_tokens", _number(event.output_tokens)),
                attribute("reasoning_tokens", _number(event.reasoning)),
                attribute("status_code", str(event.status)),
                attribute("duration_ms", str(100 + event.index % 3000)),
                attribute("time_to_first_token_ms", str(30 + event.index % 500)),
            ],
        )
        for event in events
    ]
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=[attribute("aigw.source", source)]),
                scope_logs=[logs_pb2.ScopeLogs(log_records=records)],
            )
        ]
    )
    return request.SerializeToString()


WIRE_FORMATS = {
    # name: (path, content type, body builder, summing the answer)
    "otlp-protobuf": ("/otlp/v1/logs", "application/x-protobuf", _otlp_body),
    "cloudevents": ("/api/v1/usage/events", "application/cloudevents-batch+json", _cloudevents_body),
}


def _batches(base: datetime) -> list[list[int]]:
    """Time-ordered batches of event indexes; each repeats about 10 percent of the batch before it."""
    rng = random.Random(7)
    batches = []
    step = max(int(BATCH * (1 - DUPLICATE_SHARE)), 1)
    for start in range(0, EVENTS, step):
        fresh = list(range(start, min(start + step, EVENTS)))
        repeated = rng.sample(batches[-1], min(len(batches[-1]), BATCH - len(fresh))) if batches else []
        batches.append(fresh + repeated)
    return batches


def _client_run(
    worker: int,
    wire: str,
    ports: list[int],
    token: str,
    client_ids: list[str],
    base_iso: str,
    source: str,
    start: Any,
    results: Any,
) -> None:
    """One producer: its share of the batches (and the replays it sends at the same time as their first sender),
    gzip'd, built before the start signal so the clock measures sending, not building."""
    base = datetime.fromisoformat(base_iso)
    path, content_type, build = WIRE_FORMATS[wire]
    batches = _batches(base)
    replayed = set(random.Random(11).sample(range(len(batches)), int(len(batches) * REPLAYED_BATCH_SHARE)))
    mine: list[int] = []
    for ordinal, number in enumerate(range(worker, len(batches), CLIENTS)):
        previous = (worker - 1) % CLIENTS
        twin = previous + ordinal * CLIENTS  # the batch another client sends at this moment
        if CLIENTS > 1 and twin in replayed and twin < len(batches):
            mine.append(twin)
        mine.append(number)
    bodies = [
        gzip.compress(build([_event(index, base) for index in batches[number]], client_ids, source), 3)
        for number in mine
    ]
    results.put("ready")
    start.wait()
    cpu_started = time.process_time()
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "quarantined": 0, "requests": 0, "retries": 0, "sent": 0}
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=300) for port in ports]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type, "Content-Encoding": "gzip"}
    for ordinal, (number, body) in enumerate(zip(mine, bodies, strict=True)):
        server = (worker + ordinal) % len(ports)
        while True:
            try:
                connections[server].request("POST", path, body=body, headers=headers)
                response = connections[server].getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError):
                connections[server].close()
                connections[server] = http.client.HTTPConnection("127.0.0.1", ports[server], timeout=300)
                totals["retries"] += 1
                continue
            if response.status in (429, 503):  # back-pressure: the same batch again, blindly
                totals["retries"] += 1
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            if response.status != 200:
                raise AssertionError(f"HTTP {response.status}: {payload[:300]!r}")
            if wire == "cloudevents":
                answer = json.loads(payload)
                for key in ("accepted", "duplicates", "rejected", "quarantined"):
                    totals[key] += answer[key]
            else:
                answer_pb = logs_service_pb2.ExportLogsServiceResponse.FromString(payload)
                totals["rejected"] += answer_pb.partial_success.rejected_log_records
            totals["sent"] += len(batches[number])
            totals["requests"] += 1
            break
    totals["cpu"] = time.process_time() - cpu_started
    results.put(totals)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used, from /proc/<pid>/stat; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(servers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the web processes (the gunicorn masters and their workers), of every PostgreSQL server
    process on this machine, of this process (the compactor and the report polling), and the machine's busy and idle
    seconds (/proc/stat): where a run's time went, whatever else the machine was doing."""
    masters = {server.pid for server in servers}
    web = database = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        # A parent also holds the CPU of its children that have exited (cutime and cstime, proc(5)): a backend
        # that closed its connection during the run (CONN_MAX_AGE) is counted in the postmaster.
        reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        if int(entry) in masters:
            web += cpu + reaped
        elif int(fields[1]) in masters:
            web += cpu
        elif name == "postgres":
            database += cpu + reaped
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hertz = os.sysconf("SC_CLK_TCK")
    return {
        "web": web,
        "database": database,
        "bench": time.process_time(),
        "busy": (sum(ticks) - ticks[3] - ticks[4]) / hertz,
        "idle": (ticks[3] + ticks[4]) / hertz,
    }


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


class _Compactor(threading.Thread):
    """Stands in for the beat-driven rollup task (every 30 s in production, workers/schedule.py): folds every pending
    delta five times a second, so the report is exact at most about 0.2 s after the last batch is stored. A fold
    costs about the same whatever the number of batches it takes (one upsert per rollup row touched: about 10 ms
    of database CPU for one batch of 5,000 events, 2 µs an event, against 0.4 µs an event for ten batches at once,
    measured in process), so a compactor folding after every batch would measure its own eagerness."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                usage_services.usage_rollups_compact()
                self.stop.wait(0.2)
        finally:
            connection.close()


def _report_totals(port: int, token: str, start: datetime, end: datetime) -> tuple[int, int, int, Decimal]:
    """What the cost API says for every team (a platform admin's report)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "GET",
        f"/api/v1/costs?from={start.date().isoformat()}&to={end.date().isoformat()}&group_by=team",
        headers={"Authorization": f"Bearer {token}"},
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 200, body
    totals = body["totals"]
    return totals["requests"], totals["input_tokens"], totals["output_tokens"], Decimal(totals["token_cost"])


def _lean_copy_seconds() -> float:
    """The stored rows, exactly as the portal keeps them, COPY'd into an unindexed, unpartitioned table: the ceiling.
    The median of three COPYs (one COPY of 200,000 rows took 0.54 to 0.87 s on this machine, idle)."""
    buffer = io.BytesIO()
    timings = []
    with connection.cursor() as cursor:
        with cursor.cursor.copy("COPY (SELECT * FROM usage_event) TO STDOUT") as copy:
            for chunk in copy:
                buffer.write(chunk)
        data = buffer.getvalue()
        for _ in range(3):
            cursor.execute("DROP TABLE IF EXISTS bench_lean_copy")
            cursor.execute("CREATE TABLE bench_lean_copy (LIKE usage_event)")
            started = time.perf_counter()
            with cursor.cursor.copy("COPY bench_lean_copy FROM STDIN") as copy:
                for at in range(0, len(data), 1 << 20):
                    copy.write(data[at : at + (1 << 20)])
            timings.append(time.perf_counter() - started)
            cursor.execute("SELECT count(*) FROM bench_lean_copy")
            assert cursor.fetchone()[0] == EVENTS
        cursor.execute("DROP TABLE bench_lean_copy")
    return sorted(timings)[1]


def _warm_up(wire: str, *, ports: list[int], collector: str, client_ids: list[str], base: datetime) -> None:
    """A few small batches to every server before the clock starts, so each worker has loaded what its first
    request loads (lazy imports, caches of credentials and partitions) and the run measures the steady state; what
    they store is emptied with the rest before the run."""
    path, content_type, build = WIRE_FORMATS[wire]
    headers = {"Authorization": f"Bearer {collector}", "Content-Type": content_type, "Content-Encoding": "gzip"}
    for port in ports:
        for number in range(4 * WORKERS):
            body = gzip.compress(
                build([_event(index, base) for index in range(number * 200, number * 200 + 200)], client_ids,
                      f"aigw://bench-eu1/warm-up-{wire}"),
                3,
            )  # fmt: skip
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # a new connection: any idle worker
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200, response.status


def _reset_usage() -> None:
    """Empty the raw events and every table that sums them, so each wire format's run starts from zero; the cost
    report must then say zero (a rollup table left out here would keep the last run's totals and the report would
    never become exact)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE usage_event, usage_rollup_delta, usage_quarantined_event, usage_hourly, usage_daily, "
            "usage_request_health, usage_team_daily, usage_model_daily"
        )


def _run(
    wire: str,
    *,
    servers: list[subprocess.Popen[bytes]],
    ports: list[int],
    collector: str,
    admin: str,
    client_ids: list[str],
    base: datetime,
) -> float:
    """One wire format end to end; prints its figures and returns ratio_to_copy."""
    _warm_up(wire, ports=ports, collector=collector, client_ids=client_ids, base=base)
    _reset_usage()
    source = f"aigw://bench-eu1/{wire}"
    change = base + WINDOW / 2
    report_end = base + WINDOW
    emptied = _report_totals(ports[0], admin, base, report_end)
    assert emptied == (0, 0, 0, Decimal(0)), f"the cost report still holds an earlier run: {emptied}"
    expected = [0, 0, 0, Decimal(0)]
    for index in range(EVENTS):
        event = _event(index, base)
        expected[0] += 1
        expected[1] += event.input_tokens or 0
        expected[2] += event.output_tokens or 0
        expected[3] += _cost(event, change)
    expected_totals = tuple(expected)
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    connection.close()  # forked producers must not share the parent's database socket
    clients = [
        context.Process(
            target=_client_run,
            args=(worker, wire, ports, collector, client_ids, base.isoformat(), source, start, results),
        )
        for worker in range(CLIENTS)
    ]
    for process in clients:
        process.start()
    for _ in clients:  # every producer has built its batches: the clock measures sending, not building
        assert results.get(timeout=3600) == "ready"
    compactor = _Compactor()
    compactor.start()
    try:
        cpu_before = _cpu_snapshot(servers)
        started = time.perf_counter()
        start.set()
        totals = [results.get(timeout=3600) for _ in clients]
        answered = time.perf_counter() - started
        for process in clients:
            process.join()
        while (reported := _report_totals(ports[0], admin, base, report_end)) != expected_totals:
            if time.perf_counter() - started > answered + 300:
                raise AssertionError(f"the cost report never became exact: {reported} != {expected_totals}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_snapshot(servers)
    finally:
        compactor.stop.set()
        compactor.join()
    sent = sum(total["sent"] for total in totals)
    assert sum(total["rejected"] for total in totals) == 0
    if wire == "cloudevents":
        assert sum(total["accepted"] for total in totals) == EVENTS
        assert sum(total["duplicates"] for total in totals) == sent - EVENTS
        assert sum(total["quarantined"] for total in totals) == 0
    stored = store.raw_totals()
    assert (stored["requests"], stored["input_tokens"], stored["output_tokens"]) == expected_totals[:3]
    assert Decimal(stored["cost_pico"]).scaleb(-12) == expected_totals[3]
    events, heap, indexes = store.bytes_per_event()
    assert events == EVENTS
    copy_seconds = _lean_copy_seconds()
    end_to_end = EVENTS / elapsed
    spent = {key: cpu_after[key] - cpu_before[key] for key in cpu_before}
    spent["producers"] = sum(total["cpu"] for total in totals)
    spent["other"] = spent["busy"] - spent["web"] - spent["database"] - spent["bench"] - spent["producers"]
    cpu_line = (
        ", ".join(
            f"{key} {spent[key] / EVENTS * 1e6:.1f}"
            for key in ("web", "database", "producers", "bench", "other", "idle")
        )
        + f" (wall {elapsed / EVENTS * 1e6:.1f} on {os.cpu_count()} cores)"
    )
    ceiling = EVENTS / copy_seconds
    ratio = end_to_end / ceiling
    print(
        f"\n[{wire}] {sent} events sent ({EVENTS} unique + {sent - EVENTS} duplicates, replays included) by {CLIENTS} "
        f"clients in {sum(total['requests'] for total in totals)} gzip'd batches of up to {BATCH} to {SERVERS} gunicorn "
        f"servers ({WORKERS} workers each) on ports {ports}; {sum(total['retries'] for total in totals)} retries"
        f"\n  all answered in {answered:.1f} s ({sent / answered:,.0f} events/s received)"
        f"\n  end to end until the cost report is exact: {elapsed:.1f} s = {end_to_end:,.0f} unique events/s"
        f"\n  totals exact: {expected_totals[0]} requests, {expected_totals[1]} input and {expected_totals[2]} output "
        f"tokens, {expected_totals[3]} {settings.PORTAL_CURRENCY}"
        f"\n  lean COPY of the same {EVENTS} rows as stored, into an unindexed table: {copy_seconds:.2f} s = "
        f"{ceiling:,.0f} rows/s"
        f"\n  stored: {(heap + indexes) / events:.0f} bytes per event ({heap / events:.0f} heap, "
        f"{indexes / events:.0f} indexes)"
        f"\n  CPU per unique event, µs (from /proc over the run): {cpu_line}"
        f"\n  ratio_to_copy={ratio:.3f}"
    )
    return ratio


@dataclass(frozen=True)
class BenchWorld:
    base: datetime
    client_ids: list[str]
    collector: str
    collector_token_id: int
    admin: str


def _bench_world() -> BenchWorld:
    """The load's catalog, teams, keys, collector token and an admin, in the test database."""
    base = (datetime.now(UTC) - WINDOW - timedelta(hours=1)).replace(microsecond=0)
    change = base + WINDOW / 2
    for m in range(MODELS):
        version = ManagedVersionFactory(
            model__slug=f"bench-model-{m}", served_model_name=f"bench-model-{m}", provider_model_id=f"bench-x-{m}"
        )
        for usage_type, (before, after) in PRICES[m].items():
            start = datetime(2025, 1, 1, tzinfo=UTC)
            PriceFactory(model=version.model, usage_type=usage_type, price_per_million=before, effective_from=start)
            PriceFactory(model=version.model, usage_type=usage_type, price_per_million=after, effective_from=change)
    teams = [TeamFactory(slug=f"bench-{n}") for n in range(TEAMS)]
    issued = [
        gateway_services.credential_issue(actor=None, team=team, name=f"key-{n}")
        for team in teams
        for n in range(KEYS_PER_TEAM)
    ]
    collector = api_token_issue(actor=None, principal=ServicePrincipalFactory(), name="bench", scopes=["usage:write"])
    usage_services.collector_source_bind(actor=None, token_id=collector.token.pk, source_prefix="aigw://")
    staff = UserFactory(username="bench-admin", backstage_ref=None, is_staff=True)
    admin = api_token_issue(actor=None, principal=staff, name="admin", scopes=[]).plaintext
    for month in {month_start(base), month_start(datetime.now(UTC))}:
        partition_ensure(month)
    return BenchWorld(
        base=base,
        client_ids=[credential.client_id for credential in issued],
        collector=collector.plaintext,
        collector_token_id=collector.token.pk,
        admin=admin,
    )


@pytest.mark.django_db(transaction=True)
def test_bench_usage_ingest_end_to_end() -> None:
    world = _bench_world()
    base, client_ids, admin = world.base, world.client_ids, world.admin
    ports = [_free_port() for _ in range(SERVERS)]
    servers = [_gunicorn(port) for port in ports]
    try:
        ratios = {
            wire: _run(
                wire,
                servers=servers,
                ports=ports,
                collector=world.collector,
                admin=admin,
                client_ids=client_ids,
                base=base,
            )
            for wire in ("otlp-protobuf", "cloudevents")
        }
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    print(f"\nratio_to_copy by wire format: {ratios}")
    print(f"ratio_to_copy={ratios['cloudevents']:.3f}")


PROFILE_EVENTS = int(os.environ.get("USAGE_BENCH_PROFILE_EVENTS", "50000"))


def _profile_bodies(wire: str, world: BenchWorld, first: int) -> list[bytes]:
    _, _, build = WIRE_FORMATS[wire]
    return [
        gzip.compress(
            build(
                [_event(index, world.base) for index in range(start, min(start + BATCH, first + PROFILE_EVENTS))],
                world.client_ids,
                f"aigw://bench-eu1/{wire}",
            ),
            3,
        )
        for start in range(first, first + PROFILE_EVENTS, BATCH)
    ]


def _backend_cpu_seconds() -> float:
    """CPU time the database server process of this connection has used (user and system), from /proc: the
    database's share of the work, unaffected by how busy the shared machine is."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.django_db(transaction=True)
def test_bench_usage_ingest_profile() -> None:
    """Where a batch's CPU time goes, stage by stage, in one process (no socket, no concurrency), in µs per event:
    the stages on the web process's CPU clock, the store also on the database server process's CPU clock (read
    from /proc, so the figures hold on a busy machine). 'store (web)' is the rest of the ingest service: dedupe,
    the binary COPY of the rows, the statement's round trip, the rollup deltas (grouped, then a COPY) and the
    per-event answer. 'HTTP, DRF and auth' is a whole request through Django's
    test client less the stages, on fresh events. Needs the database on this machine (/proc of its process)."""
    from django.test import Client

    from portal.usage import events, otlp_wire
    from portal.usage.services import ingest

    world = _bench_world()
    window = {
        "now": datetime.now(UTC),
        "max_age": timedelta(days=settings.USAGE_MAX_EVENT_AGE_DAYS),
        "max_skew": timedelta(seconds=settings.USAGE_MAX_CLOCK_SKEW_SECONDS),
        "max_events": settings.USAGE_MAX_BATCH_EVENTS,
    }
    readers = {
        "otlp-protobuf": lambda body: otlp_wire.read_otlp_protobuf(body, **window),
        "cloudevents": lambda body: events.read_cloudevents(body, **window),
    }
    events_before, _, _ = store.bytes_per_event()  # the raw table is not the test framework's to empty
    gc.collect()
    gc.freeze()  # as portal/wsgi.py does once the web process has loaded, with its thresholds
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 10)
    lines = []
    for offset, wire in enumerate(("otlp-protobuf", "cloudevents")):
        first = offset * 2 * PROFILE_EVENTS
        figures: dict[str, float] = dict.fromkeys(
            ("gunzip", "decode", "attribute and rate", "stored form", "store (web)", "store (database)"),
            0.0,
        )
        service = 0.0
        for body in _profile_bodies(wire, world, first):
            clock = time.process_time()
            raw = events.decode_body(body, content_encoding="gzip", max_bytes=settings.USAGE_MAX_BATCH_BYTES)
            figures["gunzip"] += time.process_time() - clock
            clock = time.process_time()
            parsed = readers[wire](raw)
            figures["decode"] += time.process_time() - clock
            records = [item for item in parsed if isinstance(item, events.UsageRecord)]
            clock = time.process_time()
            rated = ingest.rate_batch(records)
            figures["attribute and rate"] += time.process_time() - clock
            with connection.cursor() as cursor:
                sources = store.source_ids(cursor, {record.source for record in records})
                price_sets = store.price_set_ids(cursor, set(rated.price_ids))
            clock = time.process_time()
            ingest.staged(rated, price_sets=price_sets, sources=sources)
            figures["stored form"] += time.process_time() - clock
            database = _backend_cpu_seconds()
            clock = time.process_time()
            ingest.usage_ingest(token_id=world.collector_token_id, parsed=parsed, endpoint="profile")
            service += time.process_time() - clock
            figures["store (database)"] += _backend_cpu_seconds() - database
        figures["store (web)"] = service - figures["attribute and rate"] - figures["stored form"]
        path, content_type, _ = WIRE_FORMATS[wire]
        client = Client()
        headers = {"HTTP_AUTHORIZATION": f"Bearer {world.collector}", "HTTP_CONTENT_ENCODING": "gzip"}
        request = 0.0
        for body in _profile_bodies(wire, world, first + PROFILE_EVENTS):
            clock = time.process_time()
            response = client.post(path, data=body, content_type=content_type, **headers)
            request += time.process_time() - clock
            assert response.status_code == 200, response.content[:300]
        web = sum(value for key, value in figures.items() if key != "store (database)")
        figures["HTTP, DRF and auth"] = request - web
        per_event = {key: value / PROFILE_EVENTS * 1e6 for key, value in figures.items()}
        lines.append(
            f"[{wire}] CPU µs per event, batches of {BATCH}: "
            + ", ".join(f"{key} {value:.1f}" for key, value in per_event.items())
            + f"; web process {request / PROFILE_EVENTS * 1e6:.1f}, database {per_event['store (database)']:.1f}"
        )
    gc.set_threshold(*thresholds)
    print("\n" + "\n".join(lines))
    stored_events, _, _ = store.bytes_per_event()
    assert stored_events - events_before == 4 * PROFILE_EVENTS  # every batch was stored, none counted twice


REPORT_EVENTS = int(os.environ.get("USAGE_BENCH_REPORT_EVENTS", "10000000"))


@pytest.mark.django_db(transaction=True)
def test_bench_cost_report_over_10m_events() -> None:
    """A team's and the platform's cost report for last month over REPORT_EVENTS events, through gunicorn: reports
    read the daily rollup, never raw events, so the events are seeded as the rollup rows the compactor would have
    made of them (12 teams x 3 keys x 4 models x each day, in SQL; exactly REPORT_EVENTS requests in all)."""
    from catalog.models import CatalogModel
    from portal.usage import selectors as usage_selectors
    from portal.usage.models import UsageDaily

    world = _bench_world()
    today = datetime.now(UTC).date()
    last = today.replace(day=1) - timedelta(days=1)
    first = last.replace(day=1)
    days = (last - first).days + 1
    rows = TEAMS * KEYS_PER_TEAM * MODELS * days
    per_row, remainder = divmod(REPORT_EVENTS, rows)
    resolved = usage_selectors.credentials_by_client_id(world.client_ids)
    credentials = [
        (credential.credential_id, credential.team_id, client_id)
        for client_id, credential in resolved.items()
        if credential is not None
    ]
    assert len(credentials) == len(world.client_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {UsageDaily._meta.db_table} (team_id, model_id, model_slug, credential_id, client_id, day,
                requests, failed_requests, unmetered_requests, input_tokens, cached_input_tokens, cache_write_tokens,
                output_tokens, reasoning_tokens, cost)
            SELECT c.team_id, m.id, m.slug, c.id, c.client_id, %s::date + d,
                   %s + CASE WHEN row_number() OVER () <= %s THEN 1 ELSE 0 END, 0, 0, 1000 * %s, 0, 0, 200 * %s, 0,
                   (%s * 0.0045)::numeric(20, 9)
            FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS c(id, team_id, client_id),
                {CatalogModel._meta.db_table} m, generate_series(0, %s) d
            WHERE m.slug LIKE 'bench-model-%%'
            """,
            [
                first,
                per_row,
                remainder,
                per_row,
                per_row,
                per_row,
                [pk for pk, _, _ in credentials],
                [team for _, team, _ in credentials],
                [client_id for _, _, client_id in credentials],
                days - 1,
            ],
        )
        cursor.execute(f"SELECT sum(requests), count(*) FROM {UsageDaily._meta.db_table}")
        assert cursor.fetchone() == (REPORT_EVENTS, rows)
    port = _free_port()
    server = _gunicorn(port)
    lines = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        paths = {
            f"team, group_by={group_by}": f"/api/v1/teams/bench-0/costs?group_by={group_by}"
            for group_by in ("day", "model", "credential")
        } | {"platform, group_by=team": "/api/v1/costs?group_by=team"}
        for name, path in paths.items():
            samples = []
            for round_index in range(15):
                started = time.perf_counter()
                conn.request(
                    "GET",
                    f"{path}&from={first.isoformat()}&to={last.isoformat()}",
                    headers={"Authorization": f"Bearer {world.admin}"},
                )
                response = conn.getresponse()
                payload = response.read()
                assert response.status == 200, payload[:300]
                if round_index >= 5:  # the first requests warm the server's caches
                    samples.append((time.perf_counter() - started) * 1000)
            requests = json.loads(payload)["totals"]["requests"]
            samples.sort()
            lines.append(
                f"  cost report {first:%Y-%m}, {name}: median {samples[len(samples) // 2]:.1f} ms, "
                f"slowest {samples[-1]:.1f} ms over {len(samples)} requests ({requests:,} requests in it)"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n[cost report] {REPORT_EVENTS:,} events as {rows:,} daily rollup rows\n" + "\n".join(lines))
