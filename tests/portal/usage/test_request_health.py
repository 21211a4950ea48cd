"""Request health: status, duration and time to first token on both wire formats, kept in an hourly rollup with a
fixed-bucket histogram, read per team, model or deployment by the request_health selector; and the whole way from a
request through the sandbox gateway, its access log and the collector's export to the selector."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from portal.gateway import services as gateway_services
from portal.gateway.contracts import GatewayKey, ManagedModelRoute
from portal.usage import selectors
from portal.usage.models import LATENCY_BOUNDS_MS
from portal.usage.selectors import RequestHealthRow, histogram_percentile, request_health
from tests.portal.usage.conftest import UsageWorld, recent
from tests.portal.usage.test_self_hosted import hosted  # noqa: F401 - the fixture of a deployment

pytestmark = pytest.mark.django_db

BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def test_percentiles_interpolate_inside_their_bucket() -> None:
    counts = [0] * BUCKETS
    assert histogram_percentile(counts, 0.5) is None
    counts[2] = 4  # four requests between 100 and 250 ms
    assert histogram_percentile(counts, 0.5) == 175.0
    assert histogram_percentile(counts, 1.0) == 250.0
    counts[-1] = 96  # and 96 over the last bound: the open bucket answers its lower bound
    assert histogram_percentile(counts, 0.95) == float(LATENCY_BOUNDS_MS[-1])
    assert histogram_percentile(counts, 0.02) == 175.0


def test_status_duration_and_ttft_roll_up_per_team_model_and_hour(world: UsageWorld, rollups) -> None:
    at = recent(minutes=120)
    events = [
        world.event(at=at, duration_ms=80, time_to_first_token_ms=30),
        world.event(at=at, duration_ms=90, time_to_first_token_ms=40),
        world.event(at=at + timedelta(seconds=1), duration_ms=300, time_to_first_token_ms=120),
        # failed upstream, no token counts: counted as a request and an error, charged nothing
        world.event(at=at, input_tokens=None, output_tokens=None, cached=None, status_code=503, duration_ms=20),
        world.event(at=at + timedelta(hours=1), duration_ms=1200, time_to_first_token_ms=None),
    ]
    body = world.post(events).json()
    assert (body["accepted"], body["quarantined"]) == (5, 0)
    rollups()
    first = _hour(at)
    rows = request_health(
        team_ids=[world.team.pk], start=first, end=first + timedelta(hours=2), group_by="model", bucket="hour"
    )
    assert rows == [
        RequestHealthRow(
            bucket_start=first,
            key="gpt-test",
            requests=4,
            errors=1,
            error_rate=0.25,
            p50_ms=histogram_percentile([1, 2, 0, 1] + [0] * (BUCKETS - 4), 0.5),
            p95_ms=histogram_percentile([1, 2, 0, 1] + [0] * (BUCKETS - 4), 0.95),
            ttft_p50_ms=histogram_percentile([2, 0, 1] + [0] * (BUCKETS - 3), 0.5),
            ttft_p95_ms=histogram_percentile([2, 0, 1] + [0] * (BUCKETS - 3), 0.95),
        ),
        RequestHealthRow(
            bucket_start=first + timedelta(hours=1),
            key="gpt-test",
            requests=1,
            errors=0,
            error_rate=0.0,
            p50_ms=histogram_percentile([0, 0, 0, 0, 0, 1] + [0] * (BUCKETS - 6), 0.5),
            p95_ms=histogram_percentile([0, 0, 0, 0, 0, 1] + [0] * (BUCKETS - 6), 0.95),
            ttft_p50_ms=None,
            ttft_p95_ms=None,
        ),
    ]
    assert rows[0].p50_ms == 50 + 50 * (2.0 - 1) / 2  # the median of 20, 80, 90, 300 ms lies in 50-100 ms
    by_day = request_health(team_ids=None, start=first, end=first + timedelta(hours=2), group_by="team", bucket="day")
    assert {row.key for row in by_day} == {world.team.slug}
    assert (sum(row.requests for row in by_day), sum(row.errors for row in by_day)) == (5, 1)
    # A replay changes nothing; another team sees nothing of this one.
    world.post(events)
    rollups()
    again = request_health(
        team_ids=[world.team.pk], start=first, end=first + timedelta(hours=2), group_by="model", bucket="hour"
    )
    assert again == rows
    other = request_health(
        team_ids=[world.matrix.other_team.pk],
        start=first,
        end=first + timedelta(hours=2),
        group_by="team",
        bucket="hour",
    )
    assert other == []


def test_otlp_records_carry_request_health_in_the_gateways_attribute_names(world: UsageWorld, rollups) -> None:
    from tests.portal.usage.test_otlp import _access_log, _json

    at = recent()
    records = [
        _access_log(world, at=at, request_id="ok", duration_ms="640", time_to_first_token_ms="210"),
        _access_log(
            world,
            at=at,
            request_id="failed",
            status_code="500",
            input_tokens="-",
            cached_input_tokens="-",
            output_tokens="-",
            total_tokens="-",
            duration_ms="15",
            time_to_first_token_ms="-",
        ),
    ]
    response = world.collector.post("/otlp/v1/logs", data=_json(records), format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {}
    rollups()
    [row] = request_health(
        team_ids=[world.team.pk], start=_hour(at), end=_hour(at) + timedelta(hours=1), group_by="team", bucket="hour"
    )
    assert (row.requests, row.errors, row.error_rate) == (2, 1, 0.5)
    assert row.ttft_p50_ms == histogram_percentile([0, 0, 1] + [0] * (BUCKETS - 3), 0.5)


def test_request_health_of_a_deployment_is_keyed_by_its_name(world: UsageWorld, rollups, hosted) -> None:  # noqa: F811
    at = datetime.now(UTC)  # served from the deployment's creation on
    world.post([world.event(at=at, model=hosted.served_model_name, duration_ms=700, time_to_first_token_ms=90)])
    world.post([world.event(at=at, duration_ms=100)])  # a managed model: not a deployment
    rollups()
    [row] = request_health(
        team_ids=[world.team.pk],
        start=_hour(at),
        end=_hour(at) + timedelta(hours=1),
        group_by="deployment",
        bucket="hour",
    )
    assert (row.key, row.requests, row.errors) == ("chat", 1, 0)


# --- the whole way: a request through the sandbox gateway to the selector ------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[object]:
    from workers.sandbox.server import Sandbox
    from workers.sandbox.validation import default_crd_dir

    server = Sandbox(crd_dir=default_crd_dir(), ready_delay=0.0, tick=0.02).start()
    yield server
    server.stop()


def test_a_request_through_the_sandbox_gateway_reaches_request_health(world: UsageWorld, rollups, sandbox) -> None:
    from tests.workers.sandbox.test_gateway_dataplane import (
        CHAT,
        HELLO,
        Receiver,
        apply_policy,
        call,
        policy_spec,
        shipping_gateway,
        team,
    )

    sandbox.reset()  # type: ignore[attr-defined]
    issued = gateway_services.credential_issue(actor=None, team=world.team, name="health")
    key = GatewayKey(client_id=issued.client_id, key_id=issued.key_id, key=issued.key)
    spec = policy_spec(
        teams=(team(world.team.slug, key),),
        managed_routes=(
            ManagedModelRoute(
                model_slug=world.model_slug,
                served_model_name=world.served_name,
                provider_model_id=world.provider_model_id,
                backend_name="openai",
                allowed=((world.team.slug, None),),
            ),
        ),
    )
    apply_policy(sandbox, spec)  # type: ignore[arg-type]
    receiver = Receiver()
    try:
        started = datetime.now(UTC)
        with shipping_gateway(sandbox, receiver) as gateway:  # type: ignore[arg-type]
            for tokens in (3, 4, 5):
                body = {"model": world.served_name, "messages": HELLO, "max_tokens": tokens}
                assert call(gateway, CHAT, body, key=issued.key).status == 200
            assert gateway.flush(5.0)
    finally:
        receiver.close()
    records = receiver.records()
    assert len(records) == 3
    attributes = {item["key"]: item["value"]["stringValue"] for item in records[0]["attributes"]}
    assert attributes["status_code"] == "200"
    assert attributes["time_to_first_token_ms"].isdigit()  # %RESPONSE_DURATION%, rendered by the sandbox's Envoy
    # What the collector does with each export: post it, as it came, to the portal.
    for raw in receiver.bodies:
        response = world.collector.post(
            "/otlp/v1/logs", data=raw, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
        )
        assert response.status_code == 200, response.content
    rollups()
    rows = request_health(
        team_ids=[world.team.pk],
        start=_hour(started),
        end=_hour(started) + timedelta(hours=2),
        group_by="model",
        bucket="hour",
    )
    assert [(row.key, row.requests, row.errors, row.error_rate) for row in rows] == [(world.model_slug, 3, 0, 0.0)]
    [row] = rows
    assert row.p50_ms is not None
    assert row.ttft_p50_ms is not None
    assert row.ttft_p50_ms <= row.p95_ms  # type: ignore[operator]
    assert selectors.pending_delta_count() == 0
