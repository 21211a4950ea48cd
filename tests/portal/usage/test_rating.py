"""Rating: the price in force at the event's time per usage type, exact; late events and re-rating replace the
rollups they touch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from portal.core.models import AuditEvent
from portal.usage import selectors, store
from portal.usage.contracts import PriceRef
from portal.usage.models import UsageDaily, UsageHourly
from portal.usage.rating import PriceBook, rate
from tests.conftest import ROLES, assert_problem
from tests.factories import PriceFactory
from tests.portal.usage.conftest import UsageWorld, expected_cost, recent

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _book(**prices: tuple[int, str, datetime]) -> PriceBook:
    return PriceBook(
        (1, PriceRef(price_id, usage_type, Decimal(amount), start))
        for price_id, (usage_type, amount, start) in enumerate(prices.values(), start=1)
    )


def test_cache_reads_and_writes_fall_back_to_the_input_price() -> None:
    book = _book(a=("input", "3.000000", T0), b=("output", "15.000000", T0))
    rating = rate(
        book=book,
        model_id=1,
        at=T0,
        input_tokens=1000,
        cached_input_tokens=300,
        cache_write_tokens=100,
        output_tokens=10,
        reasoning_tokens=None,
    )
    assert rating.cost == Decimal("0.003150")
    assert rating.price_ids == (1, 2)


def test_each_usage_type_has_its_price_and_reasoning_is_charged_apart_only_when_priced() -> None:
    book = _book(
        a=("input", "3.000000", T0),
        b=("cached_input", "0.300000", T0),
        c=("cache_write", "3.750000", T0),
        d=("output", "15.000000", T0),
        e=("reasoning", "20.000000", T0),
    )
    rating = rate(
        book=book,
        model_id=1,
        at=T0,
        input_tokens=1_000_000,
        cached_input_tokens=400_000,
        cache_write_tokens=100_000,
        output_tokens=1_000,
        reasoning_tokens=400,
    )
    # 500k uncached x 3 + 400k x 0.3 + 100k x 3.75 + 600 x 15 + 400 x 20, per million
    assert rating.cost == Decimal("1.5") + Decimal("0.12") + Decimal("0.375") + Decimal("0.009") + Decimal("0.008")
    assert rating.price_ids == (1, 2, 3, 4, 5)
    unpriced_reasoning = _book(a=("input", "3.000000", T0), d=("output", "15.000000", T0))
    assert rate(
        book=unpriced_reasoning,
        model_id=1,
        at=T0,
        input_tokens=0,
        cached_input_tokens=None,
        cache_write_tokens=None,
        output_tokens=1000,
        reasoning_tokens=400,
    ).cost == Decimal("0.015")


def test_inconsistent_token_counts_are_a_problem_not_a_price() -> None:
    book = _book(a=("input", "3.000000", T0))
    rating = rate(
        book=book,
        model_id=1,
        at=T0,
        input_tokens=10,
        cached_input_tokens=11,
        cache_write_tokens=None,
        output_tokens=None,
        reasoning_tokens=None,
    )
    assert rating.problem == "inconsistent_tokens"


def test_price_boundary_uses_the_price_in_force_at_the_event_time(world: UsageWorld, rollups, settings) -> None:
    boundary = recent(minutes=180).replace(minute=0, second=0)
    model = PriceFactory._meta.model.objects.filter(model__slug="gpt-test").first().model
    new_input = PriceFactory(
        model=model, usage_type="input", price_per_million=Decimal("4.000000"), effective_from=boundary
    )
    before = world.event(at=boundary - timedelta(microseconds=1), input_tokens=1_000_000, output_tokens=0)
    at = world.event(at=boundary, input_tokens=1_000_000, output_tokens=0)
    after = world.event(at=boundary + timedelta(minutes=30), input_tokens=1_000_000, output_tokens=0)
    before["time"] = (boundary - timedelta(microseconds=1)).isoformat()
    assert world.post([before, at, after]).json()["accepted"] == 3
    stored = {}
    for event in (before, at, after):
        row = store.stored_event(source=event["source"], event_id=event["id"])
        stored[event["id"]] = (row["cost"], list(row["price_ids"]))
    old_input = model.prices.get(usage_type="input", effective_from__lt=boundary)
    assert stored[before["id"]] == (Decimal("2.500000000000"), [old_input.pk])
    assert stored[at["id"]] == (Decimal("4.000000000000"), [new_input.pk])
    assert stored[after["id"]] == (Decimal("4.000000000000"), [new_input.pk])
    rollups()
    hourly = {row.hour: row.cost for row in UsageHourly.objects.filter(team_id=world.team.pk)}
    assert hourly == {boundary - timedelta(hours=1): Decimal("2.5"), boundary: Decimal("8")}


def test_a_late_event_replaces_its_hour_and_day(world: UsageWorld, rollups) -> None:
    at = recent(minutes=240)
    world.post([world.event(at=at, input_tokens=1000, output_tokens=100)])
    rollups()
    assert UsageDaily.objects.get(team_id=world.team.pk).requests == 1
    world.post([world.event(at=at - timedelta(minutes=1), input_tokens=500, output_tokens=50)])
    assert rollups() == 1
    rollups()  # nothing dirty left: a second run changes nothing
    daily = UsageDaily.objects.get(team_id=world.team.pk)
    assert (daily.requests, daily.input_tokens, daily.output_tokens) == (2, 1500, 150)
    assert daily.cost == expected_cost(input_tokens=1500, output_tokens=150)


def _team_daily_cost(world: UsageWorld) -> Decimal:
    return sum((row.cost for row in UsageDaily.objects.filter(team_id=world.team.pk)), Decimal(0))


def test_rerate_after_an_earlier_effective_price_updates_events_and_rollups(world: UsageWorld, rollups) -> None:
    events = [world.event(at=recent(minutes=60 + n), input_tokens=1_000_000, output_tokens=0) for n in range(3)]
    world.post(events)
    rollups()
    # Summed over the team's days: the events are an hour old, which is yesterday for a run just after midnight UTC.
    assert _team_daily_cost(world) == Decimal("7.5")
    model = PriceFactory._meta.model.objects.filter(model__slug="gpt-test").first().model
    PriceFactory(
        model=model,
        usage_type="input",
        price_per_million=Decimal("3.000000"),
        effective_from=datetime.now(UTC) - timedelta(days=2),
    )
    client = world.matrix.client("platform_admin")
    response = client.post(
        "/api/v1/usage/rerate",
        {"model": "gpt-test", "since": (datetime.now(UTC) - timedelta(days=3)).isoformat()},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["events_changed"] == 3
    assert response.json()["cost_before"] == "7.500000000000"
    assert response.json()["cost_after"] == "9.000000000000"
    rollups()
    assert _team_daily_cost(world) == Decimal("9")
    audit = AuditEvent.objects.get(action="usage.rerate")
    assert audit.target_label == "gpt-test"
    assert audit.actor == world.matrix.platform_admin
    again = client.post("/api/v1/usage/rerate", {"model": "gpt-test", "since": "2026-01-01T00:00:00Z"}, format="json")
    assert again.json()["events_changed"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "nope", "since": "2026-01-01T00:00:00Z"}, "model"),
        ({"model": "gpt-test"}, "since"),
        ({"model": "gpt-test", "since": "yesterday"}, "since"),
        ({"model": "gpt-test", "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"model": "gpt-test", "since": "2026-01-01T00:00:00Z", "extra": 1}, "extra"),
    ],
)
def test_rerate_input_problems_name_the_field_and_change_nothing(world: UsageWorld, body, field) -> None:
    response = world.matrix.client("platform_admin").post("/api/v1/usage/rerate", body, format="json")
    problem = assert_problem(response, 400)
    assert field in [entry["field"] for entry in problem["errors"]]
    assert not AuditEvent.objects.filter(action="usage.rerate").exists()


@pytest.mark.parametrize("who", ROLES)
def test_rerate_is_for_platform_admins(world: UsageWorld, who: str) -> None:
    response = world.matrix.client(who).post(
        "/api/v1/usage/rerate", {"model": "gpt-test", "since": "2026-01-01T00:00:00Z"}, format="json"
    )
    if who == "platform_admin":
        assert response.status_code == 200
    else:
        assert_problem(response, 401 if who == "anonymous" else 403)
        assert not AuditEvent.objects.filter(action="usage.rerate").exists()


@pytest.mark.django_db(transaction=True)
def test_an_ingestion_still_open_while_the_compactor_runs_is_folded_by_the_next_run(world: UsageWorld) -> None:
    """Deltas are written in the ingestion's transaction: a compactor running meanwhile cannot see them (nor lose
    them); the next run folds them, once."""
    import threading

    from django.db import transaction

    from portal.usage import services

    at = recent(minutes=30)
    world.post([world.event(at=at, input_tokens=1000, output_tokens=0)])
    stored_and_open = threading.Event()
    compacted = threading.Event()
    failures: list[BaseException] = []

    def late_ingestion() -> None:
        try:
            from portal.usage import events as usage_events

            body = [world.event(at=at, input_tokens=2000, output_tokens=0)]
            parsed = usage_events.parse_cloudevents(
                body, now=datetime.now(UTC), max_age=timedelta(days=35), max_skew=timedelta(minutes=5), max_events=10
            )
            with transaction.atomic():
                services.usage_ingest(token_id=world.collector_token_id, parsed=parsed, endpoint="test")
                stored_and_open.set()
                compacted.wait(10)
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    ingestion = threading.Thread(target=late_ingestion)
    ingestion.start()
    assert stored_and_open.wait(10)
    assert services.usage_rollups_compact() == 1  # only the committed delta
    compacted.set()
    ingestion.join()
    assert not failures
    assert (UsageDaily.objects.get(team_id=world.team.pk).requests, selectors.pending_delta_count()) == (1, 1)
    assert services.usage_rollups_compact() == 1
    daily = UsageDaily.objects.get(team_id=world.team.pk)
    assert (daily.requests, daily.input_tokens) == (2, 3000)
    assert services.usage_rollups_compact() == 0


def _daily(world: UsageWorld) -> tuple[int, int]:
    rows = UsageDaily.objects.filter(team_id=world.team.pk)
    return sum(row.requests for row in rows), sum(row.input_tokens for row in rows)


@pytest.mark.django_db(transaction=True)
def test_a_compactor_killed_mid_run_leaves_its_deltas_to_the_next_run(world: UsageWorld) -> None:
    """A compactor that took deltas (deleted, not committed) and died: the database rolls its transaction back, a
    concurrent run skips the rows it held, and the next run folds them exactly once."""

    from django.db import connections, transaction

    from portal.usage import services

    at = recent(minutes=30)
    world.post([world.event(at=at, input_tokens=1000, output_tokens=0) for _ in range(3)])
    world.post([world.event(at=at - timedelta(hours=2), input_tokens=500, output_tokens=0)])
    assert selectors.pending_delta_count() == 2
    victim = connections.create_connection("default")
    victim.set_autocommit(False)
    with victim.cursor() as cursor:  # what the compactor does first: take the oldest delta
        cursor.execute(
            "DELETE FROM usage_rollup_delta WHERE id IN (SELECT id FROM usage_rollup_delta ORDER BY id LIMIT 1 "
            "FOR UPDATE SKIP LOCKED) RETURNING id"
        )
        assert cursor.fetchone() is not None
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    # While it holds its delta, another run folds only the other one.
    assert services.usage_rollups_compact() == 1
    assert _daily(world) == (1, 500)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    victim.close()
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while services.usage_rollups_compact() == 0:
        assert datetime.now(UTC) < deadline, "the killed run's delta never came back"
    assert _daily(world) == (4, 3500)
    assert selectors.pending_delta_count() == 0
    with transaction.atomic():
        assert services.usage_rollups_compact() == 0


def test_a_backdated_catalog_price_re_rates_its_events_once(world: UsageWorld, rollups) -> None:
    from catalog import services as catalog_services
    from catalog.models import CatalogModel
    from portal.usage import services
    from portal.usage.models import PriceRerate

    world.post([world.event(at=recent(minutes=60), input_tokens=1_000_000, output_tokens=0)])
    rollups()
    # The fixture's three prices were entered today effective from January: re-rating them changes nothing.
    assert services.usage_rerate_backdated_prices() == 3
    assert PriceRerate.objects.filter(events_changed=0).count() == 3
    price = catalog_services.model_price_add(
        actor=world.matrix.platform_admin,
        model=CatalogModel.objects.get(slug="gpt-test"),
        usage_type="input",
        price_per_million="5.00",
        effective_from=datetime.now(UTC) - timedelta(days=1),
    )
    assert services.usage_rerate_backdated_prices() == 1
    assert services.usage_rerate_backdated_prices() == 0
    rollups()
    assert UsageDaily.objects.get(team_id=world.team.pk).cost == Decimal("5")
    assert PriceRerate.objects.get(price_id=price.pk).events_changed == 1
    assert AuditEvent.objects.filter(action="usage.rerate", actor__isnull=True).count() == 4


def _by_the_rules(
    prices: dict[str, tuple[int, Decimal]], counts: dict[str, int]
) -> tuple[Decimal, tuple[int, ...], str]:
    """The rating rules applied with Decimal, one charged part at a time (rate's docstring), as the reference for the
    integer Tariff: unpriced cache reads and writes use the input price, reasoning is charged apart only when priced
    (and is then part of output), an unpriced part charges nothing."""
    total, cached, write = counts["input"], counts["cached_input"], counts["cache_write"]
    output, reasoning = counts["output"], counts["reasoning"]
    if cached + write > total:
        return Decimal(0), (), "inconsistent_tokens"
    reasoning_priced = "reasoning" in prices and reasoning > 0
    if reasoning_priced and reasoning > output:
        return Decimal(0), (), "inconsistent_tokens"
    parts = {
        "input": (total - cached - write, prices.get("input")),
        "cached_input": (cached, prices.get("cached_input") or prices.get("input")),
        "cache_write": (write, prices.get("cache_write") or prices.get("input")),
        "output": (output - reasoning if reasoning_priced else output, prices.get("output")),
        "reasoning": (reasoning if reasoning_priced else 0, prices.get("reasoning")),
    }
    cost, used = Decimal(0), set()
    for tokens, price in parts.values():
        if tokens and price is not None:
            cost += tokens * price[1] / Decimal(1_000_000)
            used.add(price[0])
    return cost, tuple(sorted(used)), ""


def test_rating_matches_the_rules_for_every_pattern_of_priced_and_counted_parts() -> None:
    """3,000 random events over random price lists (any usage type may be unpriced), against _by_the_rules."""
    import random

    rng = random.Random(16)
    types = ("input", "cached_input", "cache_write", "output", "reasoning")
    for case in range(3000):
        priced = [usage_type for usage_type in types if rng.random() < 0.7]
        prices = {
            usage_type: (n, Decimal(rng.randrange(0, 40_000_000)).scaleb(-6))
            for n, usage_type in enumerate(priced, start=1)
        }
        book = PriceBook(
            (1, PriceRef(price_id, usage_type, amount, T0)) for usage_type, (price_id, amount) in prices.items()
        )
        total = rng.choice([0, 1, rng.randrange(0, 200_000)])
        counts = {
            "input": total,
            "cached_input": rng.choice([0, rng.randrange(0, total + 2)]),
            "cache_write": rng.choice([0, rng.randrange(0, total + 2)]),
            "output": rng.choice([0, rng.randrange(0, 5000)]),
            "reasoning": rng.choice([0, rng.randrange(0, 6000)]),
        }
        rating = rate(
            book=book,
            model_id=1,
            at=T0 + timedelta(seconds=case),
            input_tokens=counts["input"],
            cached_input_tokens=counts["cached_input"],
            cache_write_tokens=counts["cache_write"],
            output_tokens=counts["output"],
            reasoning_tokens=counts["reasoning"],
        )
        assert (rating.cost, rating.price_ids, rating.problem) == _by_the_rules(prices, counts), (prices, counts)
