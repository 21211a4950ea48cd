"""Names a deployment is known by outside its team's namespace: unique across teams by construction."""

from __future__ import annotations

import itertools
import re
from importlib import import_module

import pytest
from django.apps import apps
from django.db import connection

from portal.deployments.models import Deployment, DeploymentEvent, ServedName
from portal.deployments.names import deployment_gateway_name
from portal.tenancy.models import Team, TeamGpuQuota
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory, MembershipFactory, SelfHostedVersionFactory, TeamFactory
from workers.provisioning.manifests.deployment import build_deployment_objects
from workers.provisioning.reconciler import deployment_spec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def test_the_colliding_pair_of_round_one_gets_two_names() -> None:
    # f"{team}-{name}" gave both 'team-b-bchat'.
    first = deployment_gateway_name(team_slug="team", name="b-bchat", deployment_id=1)
    second = deployment_gateway_name(team_slug="team-b", name="bchat", deployment_id=2)
    assert (first, second) == ("team--b-bchat", "team-b--bchat")


def test_long_or_ambiguous_parts_take_the_id_form() -> None:
    assert deployment_gateway_name(team_slug="a" * 40, name="b" * 40, deployment_id=7) == (
        "a" * 40 + "-" + "b" * 19 + "--7"
    )
    # a part with '--' of its own could shift the separator: the id keeps it unique
    assert deployment_gateway_name(team_slug="a--b", name="c", deployment_id=12) == "a--b-c--12"
    assert deployment_gateway_name(team_slug="a", name="b--c", deployment_id=13) == "a-b--c--13"


def test_names_are_unique_dns_labels_across_tricky_teams_and_names() -> None:
    parts = ["a", "b", "a-b", "b-c", "a--b", "b--c", "x" * 40, "x" * 39, "c-1", "1", "d" * 21]
    names = {}
    for deployment_id, (team, name) in enumerate(itertools.product(parts, parts), start=1):
        if not name[0].isalpha():
            continue
        gateway_name = deployment_gateway_name(team_slug=team, name=name, deployment_id=deployment_id)
        assert DNS_LABEL.fullmatch(gateway_name), gateway_name
        assert gateway_name not in names, (gateway_name, names.get(gateway_name), (team, name))
        names[gateway_name] = (team, name)
        assert not gateway_name.startswith("genai-portal")


@pytest.fixture
def two_teams(db: None) -> tuple[RoleMatrix, Team, Team]:
    AcceleratorPoolFactory(cluster__name="gpu-eu", cluster__region="eu-west", gpu_count=8)
    SelfHostedVersionFactory(model__slug="llama", version="v1", gpus_per_replica=1, min_gpu_memory_gb=16)
    teams = (TeamFactory(slug="team"), TeamFactory(slug="team-b"))
    for team in teams:
        TeamGpuQuota.objects.create(quota=team.quota, accelerator_type="nvidia-l4", gpus=2)
    return teams  # type: ignore[return-value]


def test_two_teams_that_looked_alike_write_disjoint_gateway_objects(two_teams, api_client_for) -> None:  # type: ignore[no-untyped-def]
    from portal.tenancy.models import Role

    clients = []
    for team in two_teams:
        user = MembershipFactory(team=team, role=Role.DEVELOPER).user
        clients.append(api_client_for(user))
    first = clients[0].post(
        "/api/v1/teams/team/deployments",
        {"name": "b-bchat", "model": "llama", "accelerator_type": "nvidia-l4"},
        format="json",
    )
    second = clients[1].post(
        "/api/v1/teams/team-b/deployments",
        {"name": "bchat", "model": "llama", "accelerator_type": "nvidia-l4"},
        format="json",
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["served_model_name"] != second.json()["served_model_name"]
    objects = []
    for deployment in Deployment.objects.order_by("pk"):
        spec = deployment_spec(deployment.pk)
        assert spec is not None
        objects.append(
            {
                (item["kind"], item["metadata"].get("namespace"), item["metadata"]["name"])
                for item in build_deployment_objects(spec)
            }
        )
    assert not objects[0] & objects[1]


def test_a_team_slug_may_not_take_the_portals_prefix(matrix: RoleMatrix) -> None:
    response = matrix.client("platform_admin").post(
        "/api/v1/teams", {"slug": "genai-portal-keys", "display_name": "Sneaky"}, format="json"
    )
    body = assert_problem(response, 400)
    assert "slug" in str(body)
    assert not Team.objects.filter(slug="genai-portal-keys").exists()


def test_the_migration_renames_keeps_unambiguous_old_names_and_drops_shared_ones(two_teams) -> None:  # type: ignore[no-untyped-def]
    from portal.deployments.services import deployment_create
    from portal.tenancy.models import User

    constraint = next(c for c in Deployment._meta.constraints if c.name == "deployment_served_model_name_unique")
    with connection.schema_editor() as editor:
        editor.remove_constraint(Deployment, constraint)
    actor = User.objects.create(username="someone", is_staff=True)
    made = [
        deployment_create(
            actor=actor, platform_admin=True, team=team, name=name, model="llama", accelerator_type="nvidia-l4"
        ).deployment
        for team, name in ((two_teams[0], "b-bchat"), (two_teams[1], "bchat"), (two_teams[1], "solo"))
    ]
    # As round one stored them: both 'team-b-bchat', and 'team-b-solo' (before the migration's unique constraint).
    for deployment in made:
        Deployment.objects.filter(pk=deployment.pk).update(
            served_model_name=f"{deployment.team.slug}-{deployment.name}"
        )
    ServedName.objects.all().delete()
    migration = import_module("portal.deployments.migrations.0002_served_names_unique_by_construction")
    migration.rename(apps, None)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor() as editor:
        editor.add_constraint(Deployment, constraint)

    rows = {row.name: row for row in Deployment.objects.all()}
    assert rows["b-bchat"].served_model_name == "team--b-bchat"
    assert rows["bchat"].served_model_name == "team-b--bchat"
    assert rows["b-bchat"].served_model_aliases == rows["bchat"].served_model_aliases == []  # shared: nobody keeps it
    assert rows["solo"].served_model_aliases == ["team-b-solo"]
    assert all(row.generation == 2 for row in rows.values())  # one reconcile moves each to its new objects
    assert DeploymentEvent.objects.filter(reason="Renamed").count() == 3
    assert set(ServedName.objects.values_list("name", flat=True)) == {
        "team--b-bchat",
        "team-b--bchat",
        "team-b--solo",
        "team-b-solo",
    }
    spec = deployment_spec(rows["solo"].pk)
    assert spec is not None
    route = next(item for item in build_deployment_objects(spec) if item["kind"] == "AIGatewayRoute")
    matched = [match["headers"][0]["value"] for match in route["spec"]["rules"][0]["matches"]]
    assert matched == ["team-b--solo", "team-b-solo"]
