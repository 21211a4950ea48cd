"""CloudEvents ingestion: exactly-once effect, attribution through the credential, quarantine, rejection with
reasons, payload limits, and who may post."""

from __future__ import annotations

import gzip
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection, transaction
from rest_framework.test import APIClient

from portal.usage import events, metrics, selectors
from portal.usage.contracts import IngestResult
from portal.usage.events import derive_event_id
from portal.usage.models import UsageDaily, UsageHourly
from portal.usage.services import ingest
from tests.conftest import ROLES, assert_problem, client_with_token
from tests.factories import ServicePrincipalFactory
from tests.portal.usage.conftest import SOURCE, UsageWorld, collector_client, expected_cost, recent

pytestmark = pytest.mark.django_db


def _raw_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_event")
        return int(cursor.fetchone()[0])


def _daily_totals(team_id: int) -> tuple[int, int, int, Decimal]:
    rows = UsageDaily.objects.filter(team_id=team_id)
    return (
        sum(row.requests for row in rows),
        sum(row.input_tokens for row in rows),
        sum(row.output_tokens for row in rows),
        sum((row.cost for row in rows), Decimal(0)),
    )


def test_batch_is_stored_rated_and_rolled_up_exactly(world: UsageWorld, rollups) -> None:
    sizes = [(1000, 200, 0), (12345, 678, 345), (1, 1, 0), (999_999, 1, 999_000), (7, 3, 7)]
    batch = [world.event(input_tokens=i, output_tokens=o, cached=c) for i, o, c in sizes]
    response = world.post(batch)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 5
    assert body["duplicates"] == body["rejected"] == body["quarantined"] == 0
    assert rollups() >= 1
    expected = sum((expected_cost(input_tokens=i, output_tokens=o, cached=c) for i, o, c in sizes), Decimal(0))
    assert _daily_totals(world.team.pk) == (5, sum(s[0] for s in sizes), sum(s[1] for s in sizes), expected)
    hourly = UsageHourly.objects.get(team_id=world.team.pk)
    assert hourly.client_id == world.client_id
    assert hourly.model_slug == "gpt-test"
    assert hourly.cached_input_tokens == 345 + 999_000 + 7
    assert hourly.cost == expected


def test_same_batch_twice_counts_once(world: UsageWorld, rollups) -> None:
    batch = [world.event(input_tokens=100 * n, output_tokens=n) for n in range(1, 11)]
    first = world.post(batch).json()
    rollups()
    before = _daily_totals(world.team.pk)
    second = world.post(batch).json()
    rollups()
    assert first["accepted"] == 10
    assert second["accepted"] == 0
    assert second["duplicates"] == 10
    assert [entry["index"] for entry in second["duplicate_events"]] == list(range(10))
    assert _daily_totals(world.team.pk) == before
    assert before[0] == 10
    assert _raw_count() == 10


def test_a_batch_repeating_part_of_an_earlier_one_reports_exactly_the_repeated_events(world: UsageWorld) -> None:
    """The store answers which staged rows were already stored only when some were (the anti-join is skipped when
    every row was new): a partial replay must still name each repeated event, and only those."""
    earlier = [world.event(input_tokens=10 + n, output_tokens=n) for n in range(6)]
    assert world.post(earlier).json()["accepted"] == 6
    fresh = [world.event(input_tokens=20 + n, output_tokens=n) for n in range(4)]
    mixed = [fresh[0], earlier[4], fresh[1], earlier[1], fresh[2], fresh[3], earlier[5]]
    body = world.post(mixed).json()
    assert body["accepted"] == 4
    assert body["duplicate_events"] == [
        {"index": 1, "id": earlier[4]["id"]},
        {"index": 3, "id": earlier[1]["id"]},
        {"index": 6, "id": earlier[5]["id"]},
    ]
    assert _raw_count() == 10


def test_duplicate_inside_one_batch_is_counted_once(world: UsageWorld) -> None:
    event = world.event()
    body = world.post([event, world.event(), event]).json()
    assert body["accepted"] == 2
    assert body["duplicate_events"] == [{"index": 2, "id": event["id"]}]


@pytest.mark.django_db(transaction=True)
def test_same_batch_sent_concurrently_by_several_clients_is_counted_once(world: UsageWorld, rollups) -> None:
    batch = [world.event(input_tokens=10 + n, output_tokens=n) for n in range(200)]
    clients = [world.collector] + [collector_client()[0] for _ in range(3)]
    results: list[dict] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients))

    def send(client: APIClient) -> None:
        try:
            barrier.wait()
            response = world.post(batch, client=client)
            results.append(response.json())
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(result["accepted"] for result in results) == 200
    assert sum(result["duplicates"] for result in results) == 200 * (len(clients) - 1)
    rollups()
    expected = sum((expected_cost(input_tokens=10 + n, output_tokens=n) for n in range(200)), Decimal(0))
    assert _daily_totals(world.team.pk) == (200, sum(10 + n for n in range(200)), sum(range(200)), expected)


@pytest.mark.django_db(transaction=True)
def test_a_copy_committed_while_the_batch_is_stored_is_skipped_by_one_retry(world: UsageWorld, rollups) -> None:
    """The store looks the batch's keys up first and inserts the rest without ON CONFLICT (store._store_sql). A
    concurrent request holding the same events, not yet committed when the lookup ran, makes that insert wait and
    then fail when it commits; the batch is stored again in the racing form, which skips them."""
    # The batch's source and price sets (with and without output tokens) are stored first: a new one would make the
    # second request wait on its row instead, and then find the events committed before looking them up.
    warm_up = [world.event(input_tokens=7, output_tokens=0), world.event(input_tokens=8, output_tokens=1)]
    assert world.post(warm_up).json()["accepted"] == 2
    batch = [world.event(input_tokens=10 + n, output_tokens=n) for n in range(50)]
    window = {
        "now": datetime.now(UTC),
        "max_age": timedelta(days=settings.USAGE_MAX_EVENT_AGE_DAYS),
        "max_skew": timedelta(seconds=settings.USAGE_MAX_CLOCK_SKEW_SECONDS),
        "max_events": settings.USAGE_MAX_BATCH_EVENTS,
    }
    parsed = events.read_cloudevents(json.dumps(batch).encode(), **window)
    retries = metrics.STORE_RETRIES.labels("concurrent_copy")
    retries_before = retries._value.get()
    stored = threading.Event()
    outcome: list[object] = []

    def first_copy() -> None:
        # Stores the batch in a transaction kept open until the request below waits on its rows, then commits.
        try:
            with transaction.atomic():
                outcome.append(ingest.usage_ingest(token_id=world.collector_token_id, parsed=parsed, endpoint="t"))
                stored.set()
                with connection.cursor() as cursor:
                    for _ in range(500):
                        # pg_stat_activity is read once per transaction unless its snapshot is cleared
                        cursor.execute(
                            "SELECT pg_stat_clear_snapshot(), count(*) FROM pg_stat_activity "
                            "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                        )
                        if cursor.fetchone()[1]:
                            break
                        time.sleep(0.02)
                    else:
                        outcome.append("the second request never waited on the first one's rows")
        except BaseException as error:  # reported below
            outcome.append(error)
            stored.set()
        finally:
            connection.close()

    thread = threading.Thread(target=first_copy)
    thread.start()
    assert stored.wait(30)
    answer = world.post(batch)
    thread.join()
    first = outcome[0]
    assert isinstance(first, IngestResult), outcome
    assert outcome[1:] == []
    assert first.accepted == 50
    assert answer.status_code == 200, answer.content
    assert (answer.json()["accepted"], answer.json()["duplicates"]) == (0, 50)
    assert retries._value.get() == retries_before + 1
    rollups()
    expected = sum((expected_cost(input_tokens=10 + n, output_tokens=n) for n in range(50)), Decimal(0))
    expected += expected_cost(input_tokens=7, output_tokens=0) + expected_cost(input_tokens=8, output_tokens=1)
    assert _daily_totals(world.team.pk) == (52, 15 + sum(10 + n for n in range(50)), 1 + sum(range(50)), expected)


def test_attribution_is_through_the_credential_never_a_team_field(world: UsageWorld, rollups) -> None:
    event = world.event(client_id=world.other_client_id, team="alpha", team_id=world.team.pk)
    assert world.post([event]).json()["accepted"] == 1
    rollups()
    assert not UsageDaily.objects.filter(team_id=world.team.pk).exists()
    assert UsageDaily.objects.get(team_id=world.matrix.other_team.pk).requests == 1


def test_unknown_credential_and_model_are_quarantined_and_reported_not_counted(world: UsageWorld, rollups) -> None:
    batch = [
        world.event(client_id="alpha.0123456789ab"),
        world.event(model="no-such-model"),
        world.event(),
    ]
    batch[0]["subject"] = batch[0]["data"]["credential_id"]
    body = world.post(batch).json()
    assert body["accepted"] == 3
    assert body["quarantined_events"] == [
        {"index": 0, "id": batch[0]["id"], "reason": "unknown_credential"},
        {"index": 1, "id": batch[1]["id"], "reason": "unknown_model"},
    ]
    rollups()
    assert _daily_totals(world.team.pk)[0] == 1
    quarantined = {row["event_id"]: row["reason"] for row in selectors.quarantined_events()}
    assert quarantined == {batch[0]["id"]: "unknown_credential", batch[1]["id"]: "unknown_model"}
    listed = world.matrix.client("platform_admin").get("/api/v1/usage/quarantine", {"page_size": 1}).json()
    assert listed["count"] == 2
    assert len(listed["results"]) == 1
    assert listed["results"][0]["reason"] in ("unknown_credential", "unknown_model")
    # A quarantined event is still deduplicated.
    assert world.post(batch[:2]).json()["duplicates"] == 2


def test_model_is_recognised_by_provider_id_and_slug(world: UsageWorld) -> None:
    body = world.post([world.event(model="gpt-test-2025"), world.event(model="gpt-test")]).json()
    assert body["accepted"] == 2
    assert body["quarantined"] == 0


def test_null_token_fields_are_valid_and_counted_as_unmetered(world: UsageWorld, rollups) -> None:
    event = world.event(input_tokens=None, output_tokens=None, cached=None, status_code=499)
    body = world.post([event]).json()
    assert body["accepted"] == 1
    assert body["quarantined"] == 0
    rollups()
    row = UsageDaily.objects.get(team_id=world.team.pk)
    assert (row.requests, row.unmetered_requests, row.failed_requests, row.cost) == (1, 1, 1, Decimal(0))


def test_malformed_events_are_rejected_with_reason_while_the_rest_is_accepted(world: UsageWorld) -> None:
    good = world.event()
    bad_time = world.event()
    bad_time["time"] = "yesterday"
    negative = world.event(input_tokens=-5)
    no_spec = world.event()
    del no_spec["specversion"]
    float_tokens = world.event(output_tokens=1.5)  # type: ignore[arg-type]
    wrong_type = world.event()
    wrong_type["type"] = "com.example.other"
    listed_type = world.event()
    listed_type["type"] = [listed_type["type"]]  # not hashable: once a 500 (found by the CloudEvents scan's fuzz)
    body = world.post([good, bad_time, negative, no_spec, "not an event", float_tokens, wrong_type, listed_type])
    assert body.status_code == 200, body.content
    body = body.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"], r["field"]) for r in body["rejected_events"]] == [
        (1, "invalid_time", "time"),
        (2, "invalid_number", "data.usage.input_tokens"),
        (3, "invalid_specversion", "specversion"),
        (4, "invalid_event", ""),
        (5, "invalid_number", "data.usage.output_tokens"),
        (6, "unsupported_type", "type"),
        (7, "unsupported_type", "type"),
    ]
    assert body["rejected_events"][1]["id"] == negative["id"]
    assert _raw_count() == 1


def test_event_id_is_derived_from_source_and_request_id_when_absent(world: UsageWorld) -> None:
    first = world.event(event_id="", request_id="req-1")
    again = world.event(event_id="", request_id="req-1", at=datetime.fromisoformat(first["time"]))
    body = world.post([first]).json()
    assert body["accepted"] == 1
    replay = world.post([again]).json()
    assert replay["duplicate_events"] == [{"index": 0, "id": derive_event_id(SOURCE, "req-1")}]
    neither = world.event(event_id="")
    del neither["data"]["request_id"]
    rejected = world.post([neither]).json()["rejected_events"]
    assert [(r["reason"], r["field"]) for r in rejected] == [("missing_id", "id")]


def test_late_and_future_events_are_refused(world: UsageWorld, settings) -> None:
    settings.USAGE_MAX_EVENT_AGE_DAYS = 35
    too_old = world.event(at=datetime.now(UTC) - timedelta(days=36))
    future = world.event(at=datetime.now(UTC) + timedelta(hours=2))
    body = world.post([too_old, future]).json()
    assert [(r["reason"], r["field"]) for r in body["rejected_events"]] == [("too_late", "time"), ("in_future", "time")]
    assert _raw_count() == 0


def test_collector_may_only_send_its_bound_sources(world: UsageWorld) -> None:
    client, _ = collector_client(prefixes=("aigw://prod-us1/",))
    body = world.post([world.event(source="aigw://prod-us1/gw"), world.event()], client=client).json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected_events"]] == [(1, "source_not_allowed")]


def test_gzip_body_is_accepted(world: UsageWorld) -> None:
    response = world.post([world.event(), world.event()], gzipped=True)
    assert response.status_code == 200
    assert response.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("payload", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "malformed_json"),
        (b'"a string"', {}, 400, "malformed_batch"),
        (b"\x1f\x8b\x08garbage", {"HTTP_CONTENT_ENCODING": "gzip"}, 400, "malformed_gzip"),
        (b"[]", {"HTTP_CONTENT_ENCODING": "br"}, 415, "unsupported_encoding"),
    ],
)
def test_unreadable_bodies_are_problems_and_store_nothing(world: UsageWorld, payload, headers, status, code) -> None:
    response = world.collector.post(
        "/api/v1/usage/events", data=payload, content_type="application/cloudevents-batch+json", **headers
    )
    assert_problem(response, status, code)
    assert _raw_count() == 0


def test_wrong_content_type_is_415(world: UsageWorld) -> None:
    response = world.collector.post("/api/v1/usage/events", data=b"[]", content_type="text/plain")
    assert_problem(response, 415, "unsupported_media_type")


def test_batch_bounds(world: UsageWorld, settings) -> None:
    settings.USAGE_MAX_BATCH_EVENTS = 3
    assert_problem(world.post([world.event() for _ in range(4)]), 413, "batch_too_large")
    settings.USAGE_MAX_BATCH_EVENTS = 1000
    settings.USAGE_MAX_BATCH_BYTES = 2048
    bomb = gzip.compress(json.dumps([world.event() for _ in range(50)]).encode())
    response = world.collector.post(
        "/api/v1/usage/events", data=bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert_problem(response, 413, "payload_too_large")
    assert _raw_count() == 0


@pytest.mark.parametrize("who", ROLES)
def test_only_collector_tokens_post_usage(world: UsageWorld, who: str) -> None:
    response = world.post([world.event()], client=world.matrix.client(who))
    if who == "anonymous":
        assert_problem(response, 401)
    else:
        assert_problem(response, 403, "permission_denied")
    assert _raw_count() == 0


def test_service_token_without_usage_scope_is_refused(world: UsageWorld) -> None:
    client = client_with_token(ServicePrincipalFactory(), scopes=["admin"])
    assert_problem(world.post([world.event()], client=client), 403)


def test_metrics_count_outcomes(world: UsageWorld) -> None:
    from prometheus_client import REGISTRY

    def value(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value("portal_usage_events_total", {"endpoint": "cloudevents", "outcome": outcome})
            or 0.0
        )

    before = {name: value(name) for name in ("accepted", "duplicate", "rejected", "quarantined")}
    event = world.event()
    bad = world.event()
    bad["time"] = "x"
    world.post([event, event, bad, world.event(model="unknown-model")])
    assert value("accepted") - before["accepted"] == 1
    assert value("duplicate") - before["duplicate"] == 1
    assert value("rejected") - before["rejected"] == 1
    assert value("quarantined") - before["quarantined"] == 1
    metrics_text = APIClient().get("/metrics").content.decode()
    assert "portal_usage_ingest_lag_seconds_bucket" in metrics_text


def test_recent_helper_is_inside_the_window() -> None:
    assert datetime.now(UTC) - recent() < timedelta(days=1)


def test_hostile_values_are_rejected_per_event_never_a_server_error(world: UsageWorld) -> None:
    surrogate = world.event()
    surrogate["source"] = "aigw://x\ud800"
    overflow = world.event()
    overflow["time"] = "0001-01-01T00:00:00+14:00"
    nul_extra = world.event(note="a\u0000b\ud800")
    payload = json.dumps([surrogate, overflow, nul_extra]).encode()
    response = world.collector.post("/api/v1/usage/events", data=payload, content_type="application/json")
    body = response.json()
    assert [(r["index"], r["reason"]) for r in body["rejected_events"]] == [(0, "invalid_field"), (1, "invalid_time")]
    assert body["accepted"] == 1
    nested = b"[" * 100_000 + b"]" * 100_000
    response = world.collector.post("/api/v1/usage/events", data=nested, content_type="application/json")
    assert_problem(response, 400, "malformed_json")


def test_quarantined_events_are_released_once_their_credential_and_model_exist(world: UsageWorld, rollups) -> None:
    from tests.factories import ManagedVersionFactory, PriceFactory

    late_model = world.event(model="late-model", input_tokens=1_000_000, output_tokens=0)
    unknown_key = world.event(client_id="alpha.aaaaaaaaaaaa")
    assert world.post([late_model, unknown_key]).json()["quarantined"] == 2
    version = ManagedVersionFactory(
        model__slug="late-model", served_model_name="late-model", provider_model_id="late-1"
    )
    PriceFactory(model=version.model, usage_type="input", price_per_million=Decimal("1.000000"))
    client = world.matrix.client("platform_admin")
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    response = client.post("/api/v1/usage/quarantine/release", {"since": since}, format="json")
    assert response.json() == {"events_scanned": 2, "events_released": 1}
    rollups()
    daily = UsageDaily.objects.get(team_id=world.team.pk)
    assert (daily.model_slug, daily.requests, daily.cost) == ("late-model", 1, Decimal("1"))
    assert [row["event_id"] for row in selectors.quarantined_events()] == [unknown_key["id"]]
    again = client.post("/api/v1/usage/quarantine/release", {"since": since}, format="json").json()
    assert again == {"events_scanned": 1, "events_released": 0}


@pytest.mark.parametrize("who", ROLES)
def test_quarantine_release_is_for_platform_admins(world: UsageWorld, who: str) -> None:
    response = world.matrix.client(who).post(
        "/api/v1/usage/quarantine/release", {"since": "2026-01-01T00:00:00Z"}, format="json"
    )
    assert response.status_code == {"anonymous": 401, "platform_admin": 200}.get(who, 403)


def test_quarantine_release_input_is_checked(world: UsageWorld) -> None:
    response = world.matrix.client("platform_admin").post("/api/v1/usage/quarantine/release", {}, format="json")
    assert [entry["field"] for entry in assert_problem(response, 400)["errors"]] == ["since"]


@pytest.mark.django_db(transaction=True)
def test_a_locked_store_answers_503_with_retry_after_and_the_retry_succeeds(world: UsageWorld, settings) -> None:
    from django.db import connections

    settings.USAGE_INGEST_LOCK_TIMEOUT_MS = 200
    batch = [world.event(), world.event()]
    world.post([world.event()])  # the partition exists and is known
    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE usage_event IN ACCESS EXCLUSIVE MODE")
        response = world.post(batch)
        assert_problem(response, 503, "ingestion_unavailable")
        assert response["Retry-After"] == str(settings.USAGE_RETRY_AFTER_SECONDS)
    finally:
        holder.rollback()
        holder.close()
    assert world.post(batch).json()["accepted"] == 2


def test_back_pressure_429_carries_retry_after(world: UsageWorld, settings) -> None:
    settings.USAGE_INGEST_RATE_LIMIT = "2/minute"
    for _ in range(2):
        assert world.post([world.event()]).status_code == 200
    response = world.collector.post("/otlp/v1/logs", data=b"{}", content_type="application/json")
    assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60


def test_collectors_have_a_rate_limit_of_their_own_not_the_apis(world: UsageWorld, settings) -> None:
    """The API's limit (1,200 requests a minute by default) would cap a collector at 20 batches a second."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"principal": "2/minute"}}
    settings.USAGE_INGEST_RATE_LIMIT = "5/minute"
    for _ in range(5):
        assert world.post([world.event()]).status_code == 200
    assert_problem(world.post([world.event()]), 429, "rate_limited")


def _credential_write(sql: str) -> bool:
    return sql.startswith("UPDATE") and "gateway_credential" in sql and "last_used_at" in sql


def test_last_used_follows_the_compactor_not_each_batch_of_a_backfill(world: UsageWorld, rollups) -> None:
    """A backfill of old events: ingestion writes no "last used" at all; the compactor then writes each credential
    once, with the latest event time it folded."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from portal.gateway.models import Credential

    start = recent(minutes=600)
    with CaptureQueriesContext(db) as queries:
        for hour in range(5):
            batch = [world.event(at=start + timedelta(hours=hour, minutes=minute)) for minute in range(3)]
            assert world.post(batch).json()["accepted"] == 3
    assert not [query for query in queries.captured_queries if _credential_write(query["sql"])]
    assert Credential.objects.get(pk=world.credential_id).last_used_at is None
    with CaptureQueriesContext(db) as queries:
        rollups()
    assert len([query for query in queries.captured_queries if _credential_write(query["sql"])]) == 1
    assert Credential.objects.get(pk=world.credential_id).last_used_at == start + timedelta(hours=4, minutes=2)
