"""What ingestion reads from other tables (collectors' source bindings, the catalog, the deployments' served names)
is kept per web process between batches, and read again as soon as any of it changes (usage migration 0015's
triggers): a new model, a new price, a deployment's served name, a change made with raw SQL and a removed source
binding each apply to the next batch; an unchanged catalog is not read again; and inside a transaction that changed
the catalog, ingestion reads it afresh and keeps nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import CatalogModel, ModelPrice
from portal.deployments.models import ServedName
from portal.usage import services as usage_services
from portal.usage import store
from portal.usage.models import CollectorSource
from tests.factories import ManagedVersionFactory, PriceFactory
from tests.portal.usage.conftest import PRICE_START, UsageWorld, collector_client, recent

# Committed for real, as every request is: the generation is set when a change commits (a test transaction that
# never commits changes nothing for other transactions, and its own reads bypass the kept lookups).
pytestmark = pytest.mark.django_db(transaction=True)


def _stored(event: dict) -> dict:
    row = store.stored_event(source=event["source"], event_id=event["id"])
    assert row is not None
    return row


def test_catalog_changes_apply_to_the_next_batch_and_an_unchanged_catalog_is_not_read_again(
    world: UsageWorld,
) -> None:
    # A name nobody serves yet: kept in quarantine, and the answer (absent) is kept too.
    early = world.event(model="brand-new-model")
    assert world.post([early]).json()["quarantined"] == 1
    assert _stored(early)["reason"] == "unknown_model"
    with CaptureQueriesContext(connection) as queries:
        assert world.post([world.event(model="brand-new-model")]).json()["quarantined"] == 1
    catalog_reads = [query["sql"] for query in queries.captured_queries if "catalog_" in query["sql"]]
    assert catalog_reads == []  # nothing changed: the names were not read again

    # The model is added to the catalog, with a price: the next batch is rated with it.
    version = ManagedVersionFactory(model__slug="brand-new-model", served_model_name="brand-new-model")
    PriceFactory(
        model=version.model, usage_type="input", price_per_million=Decimal("4.000000"), effective_from=PRICE_START
    )
    rated = world.event(model="brand-new-model", input_tokens=1_000_000, output_tokens=0)
    assert world.post([rated]).json()["quarantined"] == 0
    assert _stored(rated)["cost"] == Decimal("4")

    # A new price in force since an hour ago: the next batch is charged at it, not at the kept price book.
    PriceFactory(
        model=version.model, usage_type="input", price_per_million=Decimal("6.000000"), effective_from=recent(60)
    )
    repriced = world.event(model="brand-new-model", input_tokens=1_000_000, output_tokens=0, at=recent(10))
    world.post([repriced])
    assert _stored(repriced)["cost"] == Decimal("6")

    # A change no service makes (raw SQL, as an operator's fix would): still seen at the next batch.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ModelPrice._meta.db_table} SET price_per_million = 8 WHERE model_id = %s "
            "AND price_per_million = 6",
            [version.model_id],
        )
    fixed = world.event(model="brand-new-model", input_tokens=1_000_000, output_tokens=0, at=recent(10))
    world.post([fixed])
    assert _stored(fixed)["cost"] == Decimal("8")


def test_a_name_a_team_deployment_starts_serving_under_is_attributed_to_it_from_the_next_batch(
    world: UsageWorld,
) -> None:
    before = world.event(model="team-llama", at=recent(30))
    world.post([before])
    assert _stored(before)["reason"] == "unknown_model"
    model = CatalogModel.objects.get(slug=world.model_slug)
    version = model.versions.first()
    ServedName.objects.create(
        name="team-llama",
        deployment_id=4242,
        deployment_name="llama",
        team_id=world.team.pk,
        model_version_id=version.pk,
        model_id=model.pk,
        model_slug=model.slug,
        valid_from=recent(60),
    )
    after = world.event(model="team-llama", at=recent(30), input_tokens=1_000_000, output_tokens=0)
    world.post([after])
    stored = _stored(after)
    assert (stored["state"], stored["deployment_id"], stored["model_id"]) == ("rated", 4242, model.pk)
    assert stored["cost"] == Decimal("2.5")  # the catalog model's input price (tests/portal/usage/conftest.py)
    assert recent(30) - timedelta(minutes=1) < stored["event_time"]


def test_a_collectors_source_bindings_apply_from_the_next_batch_both_ways(world: UsageWorld) -> None:
    """The bindings are kept per process like the catalog: binding a source lets the next batch in, and removing
    the binding (however it is removed) refuses the next one, not some later one."""
    client, token_id = collector_client(prefixes=("aigw://eu1/",))
    elsewhere = "aigw://us1/envoy-ai-gateway"
    assert world.post([world.event(source=elsewhere)], client=client).json()["rejected_events"][0]["reason"] == (
        "source_not_allowed"
    )
    usage_services.collector_source_bind(actor=None, token_id=token_id, source_prefix="aigw://us1/")
    assert world.post([world.event(source=elsewhere)], client=client).json()["accepted"] == 1
    CollectorSource.objects.filter(token_id=token_id, source_prefix="aigw://us1/").delete()
    refused = world.post([world.event(source=elsewhere)], client=client).json()
    assert (refused["accepted"], refused["rejected_events"][0]["reason"]) == (0, "source_not_allowed")


def test_inside_a_transaction_that_changed_the_catalog_ingestion_reads_it_afresh_and_keeps_nothing(
    world: UsageWorld,
) -> None:
    from django.db import transaction

    from portal.usage import selectors

    warm = world.event(model="other-new-model")
    world.post([warm])
    kept = selectors.ingest_lookups()
    assert kept.names.get("other-new-model", "absent") is None  # kept as unknown
    with transaction.atomic():
        ManagedVersionFactory(model__slug="other-new-model", served_model_name="other-new-model")
        fresh = selectors.ingest_lookups()
        assert fresh is not kept
        assert fresh.rating(names=["other-new-model"])[0]["other-new-model"].slug == "other-new-model"
        transaction.set_rollback(True)
    assert selectors.ingest_lookups() is kept  # rolled back: nothing changed for anyone


def test_a_catalog_write_takes_the_generation_rows_lock_only_when_it_commits(world: UsageWorld) -> None:
    """The generation is set by a deferred trigger: a transaction changing the catalog holds no lock on it until it
    commits, so it cannot deadlock with one that locked a deployment first and then closes its served names."""
    import psycopg
    from django.db import transaction

    settings_dict = connection.settings_dict
    other = psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"] or None,
        dbname=settings_dict["NAME"],
        autocommit=True,
    )
    try:
        before = other.execute("SELECT value FROM usage_lookup_generation").fetchone()[0]
        with transaction.atomic():
            ModelPrice.objects.filter(model__slug=world.model_slug).update(price_per_million=Decimal("3.000000"))
            # Not locked while the change is open (a statement trigger would hold it here: NOWAIT would fail).
            other.execute("SELECT value FROM usage_lookup_generation FOR UPDATE NOWAIT")
            assert other.execute("SELECT value FROM usage_lookup_generation").fetchone()[0] == before
        assert other.execute("SELECT value FROM usage_lookup_generation").fetchone()[0] != before
    finally:
        other.close()
