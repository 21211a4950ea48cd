"""Backstage refs in lowercase: users' `backstage_ref` and teams' `backstage_group_ref`.

Backstage compares entity refs ignoring case and writes them in lowercase in relations and in the `sub`
of user tokens, while `spec.members` and annotations keep the case they were written in. Refs stored with
capitals made a second user (or a second link to one group) for the same entity. Nothing is merged here:
when two rows become equal in lowercase, the migration stops and names them, for a platform admin to
resolve (remove or rename one) before migrating again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import migrations


class BackstageRefCollision(Exception):
    """Two rows name one Backstage entity in different case; a person decides which one stays."""


def _collisions(rows: list[tuple[int, str]]) -> dict[str, list[tuple[int, str]]]:
    by_lowercase: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for pk, reference in rows:
        by_lowercase[reference.lower()].append((pk, reference))
    return {lowered: found for lowered, found in sorted(by_lowercase.items()) if len(found) > 1}


def _refuse(what: str, model_label: str, collisions: dict[str, list[tuple[int, str]]]) -> None:
    lines = [
        f"  {lowered}: " + ", ".join(f"id {pk} ({reference!r})" for pk, reference in found)
        for lowered, found in collisions.items()
    ]
    raise BackstageRefCollision(
        f"Cannot store {what} in lowercase: these {model_label} rows would name the same Backstage entity. "
        "Nothing was changed. Keep one row per entity (remove, merge by hand or rename the others), "
        "then migrate again:\n" + "\n".join(lines)
    )


def lowercase_backstage_refs(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("tenancy", "User")
    Team = apps.get_model("tenancy", "Team")

    users = list(User.objects.exclude(backstage_ref=None).values_list("pk", "backstage_ref"))
    collisions = _collisions(users)
    if collisions:
        _refuse("users' backstage_ref", "user", collisions)
    teams = list(Team.objects.exclude(backstage_group_ref=None).values_list("pk", "backstage_group_ref"))
    collisions = _collisions(teams)
    if collisions:
        _refuse("teams' backstage_group_ref", "team", collisions)

    usernames = set(User.objects.values_list("username", flat=True))
    for pk, reference in users:
        lowered = reference.lower()
        if lowered == reference:
            continue
        changes = {"backstage_ref": lowered}
        # A user created from Backstage is named by its ref; follow the ref unless the name is taken.
        user = User.objects.get(pk=pk)
        if user.username == reference and lowered not in usernames:
            usernames.discard(reference)
            usernames.add(lowered)
            changes["username"] = lowered
        User.objects.filter(pk=pk).update(**changes)
    for pk, reference in teams:
        if reference != reference.lower():
            Team.objects.filter(pk=pk).update(backstage_group_ref=reference.lower())


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(lowercase_backstage_refs, migrations.RunPython.noop),
    ]
