"""The move of API tokens into their own app, run for real: from main's schema (the model in the api app) forward,
a token and the collector source bound to it survive in place, and back again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from portal.tokens.models import ApiToken
from portal.usage.models import CollectorSource

pytestmark = pytest.mark.django_db(transaction=True)

# Unapplying the tokens app unapplies what depends on it too: usage's 0012 and api's 0005.
BEFORE = [("tokens", None)]


def _migrate(targets: list[tuple[str, str | None]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    applied = MigrationExecutor(connection).loader.applied_migrations
    return executor.loader.project_state(list(applied)).apps


def _leaves() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def main_schema() -> Iterator[Any]:
    """The apps as main has them (the token model in `api`); the latest schema is back afterwards, whatever happened."""
    try:
        yield _migrate(BEFORE)
    finally:
        _migrate(_leaves())


def _table_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE %s", ["%apitoken%"])
        return int(cursor.fetchone()[0])


def test_a_token_and_its_collector_source_survive_the_move_forward_and_back(main_schema: Any) -> None:
    User = main_schema.get_model("tenancy", "User")
    OldToken = main_schema.get_model("api", "ApiToken")
    OldSource = main_schema.get_model("usage", "CollectorSource")
    collector = User.objects.create(username="usage-collector", kind="service")
    old = OldToken.objects.create(
        principal=collector, name="collector", prefix="gpt_abcd1234", token_hash="f" * 64, scopes=["usage:write"]
    )
    OldSource.objects.create(token=old, source_prefix="aigw://prod-eu1/")
    ContentType.objects.filter(app_label="tokens", model="apitoken").delete()
    api_type = ContentType.objects.get_or_create(app_label="api", model="apitoken")[0]

    _migrate(_leaves())

    token = ApiToken.objects.get(pk=old.pk)
    assert (token.prefix, token.token_hash, token.scopes, token.principal_id) == (
        "gpt_abcd1234",
        "f" * 64,
        ["usage:write"],
        collector.pk,
    )
    assert list(CollectorSource.objects.filter(token=token).values_list("source_prefix", flat=True)) == [
        "aigw://prod-eu1/"
    ]
    assert ApiToken._meta.db_table == "api_apitoken"
    assert _table_count() == 1  # the same table: no copy, nothing left behind
    # The content type moved with the model, so admin permissions and log entries keep pointing at it.
    assert ContentType.objects.get(pk=api_type.pk).app_label == "tokens"

    back = _migrate(BEFORE)

    assert back.get_model("api", "ApiToken").objects.get(pk=old.pk).prefix == "gpt_abcd1234"
    assert back.get_model("usage", "CollectorSource").objects.get(token_id=old.pk).source_prefix == "aigw://prod-eu1/"
    assert ContentType.objects.get(pk=api_type.pk).app_label == "api"
