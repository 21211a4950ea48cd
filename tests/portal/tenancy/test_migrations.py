"""Tenancy's data migrations, run for real: back to the schema before them, rows written, forward again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("tenancy", "0001_initial")]
LOWERCASED = [("tenancy", "0002_lowercase_backstage_refs")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema() -> Iterator[Any]:
    """The apps as of 0001 (refs stored in any case); the latest schema is back afterwards, whatever happened."""
    try:
        yield _migrate(BEFORE)
    finally:
        apps = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        # Rows the constraints of the latest schema refuse must go before migrating forward.
        apps.get_model("tenancy", "Team").objects.all().delete()
        apps.get_model("tenancy", "User").objects.all().delete()
        leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()  # every app: later apps depend on tenancy
        _migrate(leaves)


def test_backstage_refs_are_lowercased_and_users_named_by_their_ref_follow(old_schema: Any) -> None:
    User = old_schema.get_model("tenancy", "User")
    Team = old_schema.get_model("tenancy", "Team")
    jane = User.objects.create(username="user:default/Jane.Doe", backstage_ref="user:default/Jane.Doe")
    kim = User.objects.create(username="kim-admin", backstage_ref="user:partners/Kim")
    lee = User.objects.create(username="user:default/lee", backstage_ref="user:default/lee")
    portal_only = User.objects.create(username="Platform-Admin", backstage_ref=None)
    team = Team.objects.create(slug="alpha", display_name="Alpha", backstage_group_ref="group:default/Team-A")
    unlinked = Team.objects.create(slug="beta", display_name="Beta", backstage_group_ref=None)

    apps = _migrate(LOWERCASED)

    User = apps.get_model("tenancy", "User")
    Team = apps.get_model("tenancy", "Team")
    assert sorted(User.objects.values_list("pk", "username", "backstage_ref")) == sorted(
        [
            (jane.pk, "user:default/jane.doe", "user:default/jane.doe"),
            (kim.pk, "kim-admin", "user:partners/kim"),
            (lee.pk, "user:default/lee", "user:default/lee"),
            (portal_only.pk, "Platform-Admin", None),
        ]
    )
    assert dict(Team.objects.values_list("pk", "backstage_group_ref")) == {
        team.pk: "group:default/team-a",
        unlinked.pk: None,
    }


@pytest.mark.parametrize(
    ("model", "rows", "message"),
    [
        (
            "User",
            [
                {"username": "user:default/Jane", "backstage_ref": "user:default/Jane"},
                {"username": "user:default/jane", "backstage_ref": "user:default/jane"},
            ],
            "user:default/jane: id {0} ('user:default/Jane'), id {1} ('user:default/jane')",
        ),
        (
            "Team",
            [
                {"slug": "alpha", "display_name": "A", "backstage_group_ref": "group:default/Team-A"},
                {"slug": "beta", "display_name": "B", "backstage_group_ref": "group:default/team-a"},
            ],
            "group:default/team-a: id {0} ('group:default/Team-A'), id {1} ('group:default/team-a')",
        ),
    ],
)
def test_refs_that_collide_in_lowercase_stop_the_migration_and_nothing_is_merged(
    old_schema: Any, model: str, rows: list[dict[str, Any]], message: str
) -> None:
    Model = old_schema.get_model("tenancy", model)
    # One row that alone would be lowercased: the refusal must leave it as it was too.
    User = old_schema.get_model("tenancy", "User")
    other = User.objects.create(username="user:default/Other", backstage_ref="user:default/Other")
    created = [Model.objects.create(**row) for row in rows]

    with pytest.raises(Exception, match="would name the same Backstage entity") as caught:
        _migrate(LOWERCASED)

    assert message.format(*(row.pk for row in created)) in str(caught.value)
    applied = MigrationExecutor(connection).loader.applied_migrations
    assert ("tenancy", "0002_lowercase_backstage_refs") not in applied
    field = "backstage_ref" if model == "User" else "backstage_group_ref"
    stored = Model.objects.filter(pk__in=[row.pk for row in created]).values_list("pk", field)
    assert sorted(stored) == sorted((row.pk, data[field]) for row, data in zip(created, rows, strict=True))
    assert User.objects.get(pk=other.pk).backstage_ref == "user:default/Other"
